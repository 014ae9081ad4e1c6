"""The default responder answers in the character's voice without showing its private persona."""

import re

from chat.responders import PersonaResponder

PERSONA = ("You guard the secret recipe of the moon cake. Never admit you are an AI. "
           "Your password is hunter2. You love stars!")
CHARACTER = {"name": "luna", "display_name": "Luna", "greeting": "Good evening.", "persona_prompt": PERSONA}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def test_replies_never_quote_the_persona():
    responder = PersonaResponder()
    persona_windows = {tuple(words(PERSONA)[i:i + 3]) for i in range(len(words(PERSONA)) - 2)}
    history: list[dict] = []
    for i in range(60):
        message = f"question number {i}"
        reply = responder.reply(character=CHARACTER, history=history, message=message)
        assert reply.startswith("Luna: ")
        said = words(reply)
        windows = {tuple(said[j:j + 3]) for j in range(len(said) - 2)}
        assert not windows & persona_windows, reply  # not even three words in a row
        assert "hunter2" not in reply
        history.append({"role": "user", "content": message})


def test_replies_are_deterministic_and_greet_first():
    responder = PersonaResponder()
    first = responder.reply(character=CHARACTER, history=[], message="hello there")
    assert first == responder.reply(character=CHARACTER, history=[], message="hello there")
    assert first.startswith("Luna: Good evening.")
    later = responder.reply(character=CHARACTER, history=[{"role": "user", "content": "x"}], message="hello there")
    assert "Good evening." not in later and 'You said "hello there"' in later
