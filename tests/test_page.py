"""The drawing page of `mnist-keras serve`, in headless Chromium: draw a stroke, read the prediction and the bars.

Needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver) and selenium; skipped
without them."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.server]
pytest.importorskip("selenium.webdriver")
pytest.importorskip("fastapi")

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CLASSES = [str(i) for i in range(10)]


def test_drawing_a_one_shows_a_prediction_and_a_bar_per_class(browser, tiny_server):
    browser.get(tiny_server.url + "/")
    assert browser.title.startswith("tiny")
    pad = browser.find_element(By.ID, "pad")
    assert browser.find_element(By.ID, "prediction").text == ""
    ActionChains(browser).move_to_element_with_offset(pad, 0, -90).click_and_hold() \
        .move_by_offset(0, 60).move_by_offset(0, 60).move_by_offset(0, 60).release().perform()  # a vertical "1"
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "prediction").text)
    assert browser.find_element(By.ID, "prediction").text in CLASSES
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
    assert [bar.find_element(By.TAG_NAME, "span").text for bar in bars] == CLASSES
    widths = [float(bar.find_element(By.CLASS_NAME, "fill").get_attribute("style").split("width:")[1].split("%")[0])
              for bar in bars]
    assert abs(sum(widths) - 100) < 1 and max(widths) > 10
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bars .bar.top")) == 1
    assert browser.find_element(By.ID, "status").text == ""
    seen = browser.execute_script(
        "const c = document.getElementById('seen'); return Array.from(c.getContext('2d').getImageData(0, 0, "
        "c.width, c.height).data.filter((v, i) => i % 4 === 0));")
    assert len(seen) == 28 * 28 and max(seen) > 200  # the stroke, downsampled to the model's 28x28

    browser.find_element(By.ID, "clear").click()
    assert browser.find_element(By.ID, "prediction").text == ""


def test_uploading_an_image_classifies_it(browser, tiny_server, tmp_path):
    import numpy as np
    from PIL import Image

    from mnist_keras.data.sources import BUNDLED

    with np.load(BUNDLED) as sample:
        Image.fromarray(sample["x_test"][1]).save(tmp_path / "digit.png")
    browser.get(tiny_server.url + "/")
    browser.find_element(By.ID, "file").send_keys(str(tmp_path / "digit.png"))
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "prediction").text)
    assert browser.find_element(By.ID, "prediction").text in CLASSES
