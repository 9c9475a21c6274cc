#!/usr/bin/env python3
"""`fisdit serve`'s web page in headless Chromium through Selenium (Debian's chromium,
chromium-driver and python3-selenium): the form filled from /v1/model, a job submitted from it,
the progress bar moving, the video playing, the gallery listing the job; a screenshot
`serve-page.png` in $FISDIT_ARTIFACTS_DIR (else a temporary directory; the path is printed).

    python3 tests/serve/test_browser.py PATH_TO_FISDIT

Exit 0: passed; 1: failed; 77: skipped (chromium or chromedriver not installed).
"""

import os
import shutil
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

SKIP = 77


def find_browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.access("/usr/bin/chromedriver", os.X_OK) else None)
    return chromium, driver


def import_selenium():
    """Debian's python3-selenium lives in the system Python's dist-packages; an interpreter of
    the same version elsewhere (a pyenv, a venv) can use it from there, else run again under
    /usr/bin/python3."""
    try:
        import selenium  # noqa: F401
        return
    except ImportError:
        pass
    ver = f"python3.{sys.version_info.minor}"
    for d in ("/usr/lib/python3/dist-packages", f"/usr/lib/{ver}/dist-packages"):
        if os.path.isdir(os.path.join(d, "selenium")) and sys.version_info[0] == 3:
            sys.path.append(d)
            try:
                import selenium  # noqa: F401,F811
                return
            except ImportError:
                sys.path.remove(d)
    system = "/usr/bin/python3"
    if (os.access(system, os.X_OK) and os.path.realpath(sys.executable) != os.path.realpath(system)
            and not os.environ.get("FISDIT_BROWSER_REEXEC")):
        os.environ["FISDIT_BROWSER_REEXEC"] = "1"
        os.execv(system, [system] + sys.argv)
    print("test_browser: chromium and chromedriver are installed but Selenium is not "
          "(apt-get install python3-selenium)", file=sys.stderr)
    sys.exit(1)


CHROMIUM, CHROMEDRIVER = find_browser()
if __name__ == "__main__":
    if not CHROMIUM or not CHROMEDRIVER:
        print(f"test_browser: skipped: chromium ({CHROMIUM or 'not found'}) and chromedriver "
              f"({CHROMEDRIVER or 'not found'}) are both needed "
              f"(apt-get install chromium chromium-driver python3-selenium)")
        sys.exit(SKIP)
    import_selenium()

import serve_harness as h  # noqa: E402

JS_SET = """
const el = document.getElementById(arguments[0]);
if (!el) return 'no #' + arguments[0];
if (el.tagName === 'SELECT' && ![...el.options].some(o => o.value === arguments[1]))
  return '#' + arguments[0] + ' has no option ' + arguments[1] + ': ' +
         [...el.options].map(o => o.value).join(', ');
el.value = arguments[1];
el.dispatchEvent(new Event('input', {bubbles: true}));
el.dispatchEvent(new Event('change', {bubbles: true}));
return el.value === String(arguments[1]) ? '' : '#' + arguments[0] + ' is ' + el.value;
"""

# Every change of #progress's value attribute, recorded in the page from before the click.
JS_WATCH = """
window.__fisditProgress = [];
const watch = () => {
  const el = document.getElementById('progress');
  if (!el) return;
  const v = el.getAttribute('value');
  if (v !== null) window.__fisditProgress.push(v);
};
new MutationObserver(watch).observe(document.body,
  {attributes: true, subtree: true, childList: true, attributeFilter: ['value']});
"""

JS_STATE = """
const p = document.getElementById('progress');
const v = document.getElementById('video');
const e = document.getElementById('error');
return {progress: p ? p.getAttribute('value') : null,
        src: v ? (v.currentSrc || v.src || '') : '',
        duration: v ? v.duration : null, readyState: v ? v.readyState : null,
        mediaError: v && v.error ? v.error.code : null,
        error: e ? e.textContent.trim() : '',
        status: (document.getElementById('status') || {}).textContent || ''};
"""


class BrowserTest(h.ServerTestCase):

    def setUp(self):
        super().setUp()
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        opts = Options()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1280,1000", "--autoplay-policy=no-user-gesture-required",
                  "--no-first-run", "--no-default-browser-check"):
            opts.add_argument(a)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        self.addCleanup(self.driver.quit)
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(30)
        art = os.environ.get("FISDIT_ARTIFACTS_DIR")
        if art:
            os.makedirs(art, exist_ok=True)
        else:
            art = tempfile.mkdtemp(prefix="fisdit-serve-artifacts-")
        self.artifacts = art

    def shot(self, name):
        path = os.path.join(self.artifacts, name)
        try:
            self.driver.save_screenshot(path)
            print(f"  screenshot: {path}", file=sys.stderr)
        except Exception as e:  # the screenshot is a by-product
            print(f"  screenshot failed: {e}", file=sys.stderr)
        return path

    def browser_log(self):
        try:
            return "\n".join(f"{e.get('level')} {e.get('message')}"
                             for e in self.driver.get_log("browser"))
        except Exception as e:
            return f"(no browser log: {e})"

    def wait(self, what, cond, timeout, poll=0.05):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = cond()
            if last:
                return last
            time.sleep(poll)
        self.shot("serve-page-failure.png")
        self.fail(f"{what}: not within {timeout} s (last {last!r}); browser log:\n"
                  f"{self.browser_log()}")

    def value(self, el_id):
        return self.driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.value : null;",
            el_id)

    def test_page(self):
        from selenium.webdriver.common.by import By
        drv = self.driver
        srv = self.start()
        # An earlier job, made over the API: the gallery lists it on load.
        earlier = self.submit_ok(srv, h.tiny_job(h.PROMPTS[4]))
        h.wait_for_status(srv, earlier["id"], "completed", timeout=60)
        st, _, model = srv.json("GET", "/v1/model")
        self.assertEqual(st, 200)
        d = model["defaults"]

        drv.get(srv.url + "/")
        for el_id in ("api-key", "prompt", "negative", "size", "frames", "steps", "seed",
                      "guidance", "shift", "solver", "fis", "cache", "precision", "image",
                      "submit", "progress", "status", "error", "video", "times", "gallery"):
            self.assertTrue(drv.find_elements(By.ID, el_id), f"the page has no #{el_id}")
        # The form is filled from /v1/model.
        self.wait("form filled from /v1/model",
                  lambda: (self.value("frames") == str(d["frames"])
                           and self.value("size") == d["size"]
                           and self.value("steps") == str(d["steps"])), 15)
        self.assertEqual(self.value("solver"), d["solver"])
        self.assertEqual(self.value("fis"), d["fis"])
        self.wait("the earlier job in #gallery",
                  lambda: drv.find_elements(By.CSS_SELECTOR,
                                            f'#gallery .job[data-id="{earlier["id"]}"]'), 15)

        prompt = drv.find_element(By.ID, "prompt")
        prompt.clear()
        text = "a red circle moves left on a blue background"
        prompt.send_keys(text)
        for el_id, v in (("size", "64x64"), ("frames", "17"), ("steps", "8"), ("seed", "3")):
            err = drv.execute_script(JS_SET, el_id, v)
            self.assertEqual(err, "", err)
        drv.execute_script(JS_WATCH)
        t0 = time.monotonic()
        drv.find_element(By.ID, "submit").click()

        # The progress bar while the job runs: poll quickly (and the page's own record).
        seen = []
        state = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            state = drv.execute_script(JS_STATE)
            if state["progress"] is not None and (not seen or seen[-1] != state["progress"]):
                seen.append(state["progress"])
            if state["error"]:
                break
            try:
                if float(state["progress"]) >= 100 and state["src"].startswith("blob:"):
                    break
            except (TypeError, ValueError):
                pass
            time.sleep(0.05)
        recorded = drv.execute_script("return window.__fisditProgress || []")
        took = time.monotonic() - t0
        values = []
        for v in seen + list(recorded):
            try:
                values.append(float(v))
            except (TypeError, ValueError):
                pass
        print(f"  progress values polled {seen}, recorded in the page {recorded[:40]} "
              f"({took:.1f} s)", file=sys.stderr)
        if state and state["error"]:
            self.shot("serve-page-failure.png")
            self.fail(f"the page shows an error: {state['error']!r}")
        below = sorted({v for v in values if v < 100})
        self.assertGreaterEqual(len(below), 2,
                                f"#progress took fewer than two values below 100: {values}")
        self.assertIn(100.0, values, f"#progress never reached 100: {values}")

        # The job the page made.
        jobs = h.list_all_jobs(srv)
        self.assertEqual(len(jobs), 2, [j["id"] for j in jobs])
        job = jobs[0]
        self.assertNotEqual(job["id"], earlier["id"])
        self.assertEqual(job["status"], "completed", job)
        req = job["request"]
        self.assertEqual((req["prompt"], req["size"], req["frames"], req["steps"], req["seed"]),
                         (text, "64x64", 17, 8, 3), req)

        # The video plays.
        st = self.wait("#video with a blob: src and a duration",
                       lambda: (lambda s: s if (s["src"].startswith("blob:")
                                                and s["readyState"] is not None
                                                and s["readyState"] >= 1
                                                and isinstance(s["duration"], (int, float))
                                                and s["duration"] > 0) else None)(
                           drv.execute_script(JS_STATE)), 30)
        print(f"  video: duration {st['duration']:.3f} s, readyState {st['readyState']}",
              file=sys.stderr)
        self.assertIsNone(st["mediaError"], st)
        self.assertEqual(st["error"], "", st)
        duration = drv.execute_script('return document.getElementById("video").duration')
        self.assertGreater(duration, 0)

        self.wait("the new job in #gallery",
                  lambda: drv.find_elements(By.CSS_SELECTOR,
                                            f'#gallery .job[data-id="{job["id"]}"]'), 15)
        times = drv.find_element(By.ID, "times").text.strip()
        self.assertTrue(times, "#times is empty")

        # Nothing was loaded from another origin.
        urls = drv.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        foreign = [u for u in urls if not (u.startswith(srv.url) or u.startswith("blob:")
                                           or u.startswith("data:"))]
        self.assertEqual(foreign, [], "the page loaded resources from elsewhere")

        path = self.shot("serve-page.png")
        self.assertTrue(os.path.getsize(path) > 0)
        print(f"serve-page.png: {path}")
        severe = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"
                  and "favicon.ico" not in e.get("message", "")]
        self.assertEqual(severe, [], "errors in the browser console")
        srv.stop()


if __name__ == "__main__":
    h.main(BrowserTest)
