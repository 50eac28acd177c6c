"""The playground page (GET /) in a real browser: Debian's headless chromium driven through
chromium-driver and the pinned selenium package, against a live `earnserve serve` with the bundled
recommender (models/beauty-full) and an API key. The page searches the catalogue by title, builds
a history of three items and asks for recommendations (speculative, with the bundled AtSpeed draft); the list it renders must equal what
/v1/recommendations answers for the same body. A screenshot (PNG) is written under
$EARNSERVE_TEST_OUTPUT (ctest: build/tests/playground/) or pytest's temporary directory.

Skips, saying why, when chromium, chromedriver or selenium is missing (tools/setup.sh installs
them).

Run: EARNSERVE_BIN=build/api/earnserve .venv/bin/python -m pytest tests/e2e/test_playground.py
"""
import json
import os
import shutil
from pathlib import Path

import pytest
import requests

from test_server import BIN, ROOT, Server

BEAUTY = ROOT / "models/beauty-full"
DRAFT = ROOT / "models/beauty-full-draft-atspeed-s"
STORY = ROOT.parent / "shared/models/tinystories-656k"
KEY = "sk-playground-test"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - depends on the machine
    webdriver = None

if webdriver is None:
    pytest.skip("selenium is not installed (pip install -r tools/requirements-test.txt)",
                allow_module_level=True)
if not CHROMIUM or not CHROMEDRIVER:
    pytest.skip("chromium or chromedriver is not installed (apt-get install chromium "
                "chromium-driver, or run tools/setup.sh)", allow_module_level=True)


def output_dir(tmp_path_factory):
    env = os.environ.get("EARNSERVE_TEST_OUTPUT")
    if env:
        Path(env).mkdir(parents=True, exist_ok=True)
        return Path(env)
    return tmp_path_factory.mktemp("playground")


@pytest.fixture(scope="module")
def browser():
    # Selenium must not look for a driver on the network: the Debian one is given.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1050", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def rec_server():
    if not Path(BIN).exists():
        pytest.fail(f"no earnserve binary at {BIN} (set EARNSERVE_BIN)")
    # With the AtSpeed draft, recommendations speculate (strict: the target's own beam search)
    # and usage carries the speculative stats the page shows. Policy `always`: under `auto` the
    # cost model learns from every step, so the page's request and the test's own call of the
    # same body may decide differently (rounds, target calls) and the stats would not compare.
    s = Server("--api-key", KEY, "--draft-model", str(DRAFT), "--speculative-policy", "always",
               model=BEAUTY)
    yield s
    s.stop()


def wait(driver, condition, timeout=60, what="the page"):
    return WebDriverWait(driver, timeout).until(
        lambda d: condition(d), message=f"timed out waiting for {what}")


def error_text(driver):
    box = driver.find_element(By.ID, "error")
    return box.text if box.is_displayed() else ""


def save_key(driver, key):
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    if key:
        field.send_keys(key)
    driver.find_element(By.ID, "save-key").click()


def test_recommendations_in_the_page_equal_the_api(browser, rec_server, tmp_path_factory):
    browser.get(rec_server.url + "/")
    # Without the key the page says what is wrong instead of staying blank.
    save_key(browser, "")
    wait(browser, lambda d: "401" in error_text(d), what="the 401 message")
    assert "API key" in error_text(browser)

    save_key(browser, KEY)
    wait(browser, lambda d: d.find_element(By.ID, "model-name").text == "beauty-full",
         what="the model name")
    assert error_text(browser) == ""
    assert browser.find_element(By.ID, "recommend-panel").is_displayed()

    # Asking before choosing a history is an error shown in the page.
    browser.find_element(By.ID, "recommend").click()
    wait(browser, lambda d: "history" in error_text(d), what="the empty-history message")

    search = browser.find_element(By.ID, "search")
    search.send_keys("black soap")
    browser.find_element(By.ID, "search-button").click()
    rows = wait(browser,
                lambda d: d.find_elements(By.CSS_SELECTOR, "#search-results li[data-item-id]"),
                what="search results")
    expected = requests.get(rec_server.url + "/v1/items",
                            params={"search": "black soap", "limit": 20},
                            headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()
    assert [r.get_attribute("data-item-id") for r in rows] == \
        [i["item_id"] for i in expected["data"]]
    assert len(rows) >= 3
    for row in rows[:3]:
        assert "soap" in row.find_element(By.CLASS_NAME, "title").text.lower()
        row.find_element(By.TAG_NAME, "button").click()
    chosen = [r.get_attribute("data-item-id") for r in rows[:3]]
    history = browser.find_elements(By.CSS_SELECTOR, "#history li[data-item-id]")
    assert [h.get_attribute("data-item-id") for h in history] == chosen

    top_k = browser.find_element(By.ID, "top-k")
    top_k.clear()
    top_k.send_keys("8")
    browser.find_element(By.ID, "recommend").click()
    wait(browser, lambda d: d.find_element(By.ID, "stats").get_attribute("data-done") == "true",
         what="the recommendations")
    assert error_text(browser) == ""

    body = json.loads(browser.find_element(By.ID, "request-body").get_attribute("textContent"))
    assert body == {"history": chosen, "top_k": 8}
    answer = requests.post(rec_server.url + "/v1/recommendations", json=body,
                           headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert len(items) == 8

    rendered = browser.find_elements(By.CSS_SELECTOR, "#results tr")
    got = [{"item_id": r.get_attribute("data-item-id"),
            "score": float(r.get_attribute("data-score")),
            "title": r.find_element(By.CLASS_NAME, "title").text,
            "identifier": r.find_element(By.CLASS_NAME, "identifier").text} for r in rendered]
    # Same items, titles and identifiers in the same order. A title's runs of spaces show as one
    # in HTML (the catalogue has titles with double spaces), so titles compare with whitespace
    # collapsed. Scores to float precision: the API call reuses the page's prompt pages from the
    # prefix cache, and a prefill over cached pages sums in another order than the page's full
    # prefill (about 1e-7 apart).
    def shown(d):
        return {"item_id": d["item_id"], "title": " ".join(d["title"].split()),
                "identifier": d["identifier"]}
    assert [shown(g) for g in got] == [shown(i) for i in items]
    assert [g["score"] for g in got] == pytest.approx([i["score"] for i in items], rel=1e-5)
    assert all(g["title"] and g["title"] != "(no title)" for g in got)

    stats = browser.find_element(By.ID, "stats").text
    usage = answer.json()["usage"]
    assert "latency" in stats and " ms" in stats
    assert f"prompt tokens {usage['prompt_tokens']}" in stats
    assert f"completion tokens {usage['completion_tokens']}" in stats
    assert "KV pages per group " + " / ".join(map(str, usage["kv_blocks"])) in stats
    assert f"speculative rounds {usage['speculative']['rounds']}" in stats
    assert f"target calls {usage['speculative']['target_calls']}" in stats
    per_round = ", ".join(map(str, usage["speculative"]["accepted_steps_per_round"]))
    assert f"accepted steps {usage['speculative']['accepted_steps']} (per round: {per_round})" \
        in stats

    shot = output_dir(tmp_path_factory) / "playground.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshot: {shot}")


@pytest.mark.skipif(not STORY.exists(), reason=f"{STORY} is missing (the shared TinyStories model)")
def test_a_text_model_streams_a_completion(browser, tmp_path_factory):
    s = Server(model=STORY)
    try:
        browser.get(s.url + "/")
        wait(browser, lambda d: d.find_element(By.ID, "complete-panel").is_displayed(),
             what="the completion panel (the model has no catalogue)")
        browser.find_element(By.ID, "prompt").send_keys("Once upon a time")
        tokens = browser.find_element(By.ID, "max-tokens")
        tokens.clear()
        tokens.send_keys("24")
        browser.find_element(By.ID, "complete").click()
        wait(browser, lambda d: "completion tokens" in d.find_element(By.ID, "completion-stats").text,
             what="the streamed completion")
        assert error_text(browser) == ""
        shown = browser.find_element(By.ID, "completion-output").get_attribute("textContent")
        answer = requests.post(s.url + "/v1/completions", json={
            "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0}, timeout=60).json()
        assert shown == answer["choices"][0]["text"]
        assert "completion tokens 24" in browser.find_element(By.ID, "completion-stats").text
        browser.save_screenshot(str(output_dir(tmp_path_factory) / "playground_completion.png"))
    finally:
        s.stop()
