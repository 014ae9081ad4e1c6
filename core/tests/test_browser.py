"""A real browser (Debian's chromium, headless, driven by selenium through its chromedriver) on the
admin and Swagger UI, served by pytest-django's live server with the static files as gunicorn
serves them: the admin login and its lockout, the cache statistics page and its chart, a character
edit showing at once in the API, and Swagger UI's "Authorize" then "Try it out"."""

import json
import shutil
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.support.fixtures import PASSWORD

CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,1000")
STAFF_EMAIL, STAFF_PASSWORD = "root@example.com", "admin-password-123"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMEDRIVER.exists(), reason="apt-get install chromium chromium-driver (.ci/run does)"),
]


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")  # fresh: no cookies or cache from before
    options = webdriver.ChromeOptions()
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, css: str, timeout: float = 20):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css)))


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def admin_login(driver, base: str, email: str, password: str) -> None:
    """Submit the admin's login form and return once its answer replaced the form's page: a wait
    for an element right after the click could find it on the old page, mid-navigation."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{base}/admin/login/?next=/admin/")
    wait_for(driver, "#id_username").send_keys(email)
    css(driver, "#id_password").send_keys(password)
    form_page = css(driver, "html")
    css(driver, "#login-form [type=submit]").click()
    # While the page changes, chromium can answer a look at the old one with an error of its own
    # ("cannot find context"): look again until the old page is gone.
    WebDriverWait(driver, 20, ignored_exceptions=(WebDriverException,)).until(expected_conditions.staleness_of(form_page))


def api_get(base: str, path: str, user) -> dict:
    from accounts.apis import tokens_for

    request = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Bearer {tokens_for(user)['access']}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def staff_user(plans):
    from accounts.models import User

    return User.objects.create_superuser(STAFF_EMAIL, STAFF_PASSWORD)


def test_admin_login_then_lockout_after_repeated_failures(browser, live_server, staff_user, settings):
    admin_login(browser, live_server.url, STAFF_EMAIL, STAFF_PASSWORD)
    wait_for(browser, "#site-name")
    assert "Site administration" in browser.page_source
    assert 'href="/api/docs"' in browser.page_source  # "View site"
    browser.delete_all_cookies()

    for _ in range(settings.AXES_FAILURE_LIMIT):
        admin_login(browser, live_server.url, STAFF_EMAIL, "not-the-password")
        wait_for(browser, "body")
    # Locked: now even the right password is refused, with the lockout page instead of the form.
    admin_login(browser, live_server.url, STAFF_EMAIL, STAFF_PASSWORD)
    wait_for(browser, "body")
    assert "locked" in browser.page_source.lower()
    assert "Site administration" not in browser.page_source
    browser.get(f"{live_server.url}/admin/")
    assert "/admin/login/" in browser.current_url


def test_cache_statistics_page_draws_its_chart(browser, live_server, staff_user, alice, characters):
    for _ in range(4):  # one miss, three hits: character's hit ratio is drawn
        alice.get("/api/characters/luna")
    admin_login(browser, live_server.url, STAFF_EMAIL, STAFF_PASSWORD)
    wait_for(browser, "#site-name")
    browser.get(f"{live_server.url}/admin/cache-stats/")
    chart = wait_for(browser, "table.cache-chart")
    from selenium.webdriver.common.by import By

    bars = {}
    for row in chart.find_elements(By.CSS_SELECTOR, "tbody tr"):
        family = row.find_element(By.CSS_SELECTOR, "code").text
        for bar in row.find_elements(By.CSS_SELECTOR, "[role=img]"):
            label = bar.get_attribute("aria-label")
            filled = bar.find_element(By.CSS_SELECTOR, "div")
            bars[(family, label.split()[0])] = (label, filled.size["width"] / bar.size["width"])
    label, drawn = bars[("character", "hit")]
    shown = float(label.rsplit(" ", 1)[1].rstrip("%"))
    assert 0 < shown <= 100
    assert abs(drawn * 100 - shown) < 2, (label, drawn)  # the bar is as long as the number says
    assert ("character", "memory") in bars


def test_a_character_edit_in_the_admin_shows_at_once_in_the_api(browser, live_server, staff_user, user, characters):
    assert api_get(live_server.url, "/api/characters/luna", user)["display_name"] == "Luna"  # now cached
    admin_login(browser, live_server.url, STAFF_EMAIL, STAFF_PASSWORD)
    wait_for(browser, "#site-name")
    browser.get(f"{live_server.url}/admin/characters/character/{characters['luna'].pk}/change/")
    name = wait_for(browser, "#id_display_name")
    name.clear()
    name.send_keys("Luna Prime")
    css(browser, "input[name=_save]").click()
    wait_for(browser, ".messagelist .success")
    assert api_get(live_server.url, "/api/characters/luna", user)["display_name"] == "Luna Prime"
    listed = api_get(live_server.url, "/api/characters", user)
    listed = listed.get("results", listed) if isinstance(listed, dict) else listed
    assert "Luna Prime" in [c["display_name"] for c in listed]


def test_swagger_ui_authorize_then_try_it_out(browser, live_server, user):
    from accounts.apis import tokens_for

    browser.get(f"{live_server.url}/api/docs")
    wait_for(browser, ".btn.authorize").click()
    wait_for(browser, ".modal-ux input[type=text]").send_keys(tokens_for(user)["access"])
    css(browser, ".modal-ux .auth-btn-wrapper .authorize").click()
    css(browser, ".modal-ux .btn-done").click()

    wait_for(browser, "#operations-me-me_retrieve .opblock-summary").click()
    wait_for(browser, "#operations-me-me_retrieve .try-out__btn").click()
    wait_for(browser, "#operations-me-me_retrieve .execute").click()
    body = wait_for(browser, "#operations-me-me_retrieve .live-responses-table .response-col_description pre")
    assert json.loads(body.text)["email"] == user.email
    status = css(browser, "#operations-me-me_retrieve .live-responses-table tbody .response-col_status")
    assert status.text.strip() == "200"
    assert PASSWORD not in browser.page_source
