"""The web page in a real headless Chromium, used as a person would: upload a photo, move a slider, see the
edited face change. Debian's chromium and chromium-driver are installed by .ci/run."""

from __future__ import annotations


import pytest
from PIL import Image

pytestmark = pytest.mark.ray

def test_upload_slide_and_see_the_edit(serve_url, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    photo = tmp_path / "face.jpg"
    Image.new("RGB", (120, 150), (190, 140, 110)).save(photo, format="JPEG")
    wait = WebDriverWait(browser, 30)
    browser.get(serve_url + "/")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, 'input[type=range][data-attribute="Smiling"]')))

    browser.find_element(By.ID, "file").send_keys(str(photo))
    wait.until(lambda d: d.find_element(By.ID, "reconstruction").get_attribute("src").startswith("data:image/png"))
    wait.until(lambda d: d.find_element(By.ID, "status").text.strip() == "ready")
    before = browser.find_element(By.ID, "edited").get_attribute("src") or ""

    slider = browser.find_element(By.CSS_SELECTOR, 'input[type=range][data-attribute="Smiling"]')
    slider.click()  # focus, as a user would, then step it with the keyboard
    slider.send_keys(*[Keys.ARROW_RIGHT] * 15)
    wait.until(lambda d: (d.find_element(By.ID, "edited").get_attribute("src") or "") not in ("", before)
               and d.find_element(By.ID, "status").text.strip() == "ready")
    edited = browser.find_element(By.ID, "edited").get_attribute("src")
    assert edited.startswith("data:image/png") and edited != before
    assert "Smiling" in browser.find_element(By.ID, "scores").text
    assert not browser.find_element(By.ID, "error").text.strip()
