"""report.html in a real browser (headless Debian chromium): it loads with no console error and every chart is
drawn. The report comes from a real `guides eval` run over the real guides with the fake LLM and fake judge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    from core.settings import Settings
    from eval.runner import run_eval
    from pipeline.qa import Pipeline
    from ingest.embed import HashEmbedder
    from ingest.pipeline import run_ingest
    repo = Path(__file__).resolve().parents[2]
    root = tmp_path_factory.mktemp("report")
    s = Settings(guides_dir=repo / "data" / "guides", data_dir=root / "data", embed_model="fake:hash", reranker="off", llm="fake",
                 judge="fake")
    run_ingest(s, embedder=HashEmbedder(), progress=False)
    pipe = Pipeline(s, embedder=HashEmbedder())
    try:
        run_eval(s, repo / "eval" / "golden.jsonl", out=root / "run", pipeline=pipe, progress=False, limit=30, judge_sample=8)
    finally:
        pipe.close()
    return root / "run"


def test_report_opens_in_a_browser_with_every_chart_drawn(report_dir, browser):
    from selenium.webdriver.common.by import By

    m = json.loads((report_dir / "metrics.json").read_text())
    assert m["answers"]["ragas"]["judged"] == 8
    browser.get((report_dir / "report.html").as_uri())
    charts = browser.find_elements(By.CSS_SELECTOR, "img.chart")
    ids = {c.get_attribute("id") for c in charts}
    assert ids == {"chart-parts", "chart-retrieval", "chart-states", "chart-latency"}
    for c in charts:
        drawn = browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 100 "
                                       "&& arguments[0].naturalHeight > 100", c)
        assert drawn, f"chart {c.get_attribute('id')} is not drawn"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "ragas, LLM-judged" in text and "Judged questions:" in text and "Tune / test split" in text
