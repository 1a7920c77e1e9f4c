#!/usr/bin/env python3
"""REDbot (lint for HTTP, PyPI `redbot`) against a running eligd: the page for people and every
file of it, `/fhir/r4/metadata`, and an answer. Exits 1 on a problem, listing every note.

    python scripts/redbot-check.py BASE ANSWER_PATH
    e.g. target/redbot-venv/bin/python scripts/redbot-check.py http://127.0.0.1:8080 \
             /v1/members/0029618444/eligibility

Run by tests/it/web_page.rs (`cargo test --test it -- redbot`), which starts eligd and makes
target/redbot-venv. A problem is:
  - any note REDbot rates "bad" or "warning", on any URL;
  - a file of the page that caches cannot store (no-store), whose ETag REDbot's
    If-None-Match check does not see answered 304, or, for text, that REDbot's
    Accept-Encoding check does not see gzipped;
  - an answer (FHIR metadata, an eligibility answer) that a cache could store, or that is
    compressed: answers stay no-store and as they are.
Each URL is checked in a process of its own (REDbot's event loop runs once per process).
"""

import json
import subprocess
import sys

PAGE = ["/", "/page.js", "/page.css", "/code128.js", "/sw.js", "/manifest.webmanifest"]
IMAGES = ["/icon-192.png", "/icon-512.png"]


def notes_of(url):
    """REDbot's notes on `url`: (level, name, summary), subnotes included."""
    from configparser import ConfigParser

    import thor
    from redbot.resource import HttpResource

    config = ConfigParser()
    config.read_dict({"redbot": {"enable_local_access": "True"}})
    resource = HttpResource(config["redbot"], descend=False)
    resource.set_request(url)

    @thor.events.on(resource)
    def check_done():
        thor.stop()

    resource.check()
    thor.run()
    if not resource.has_response:
        return {"error": str(resource.fetch_error), "notes": []}
    out = []

    def walk(notes):
        for note in notes:
            out.append((note.level.value, type(note).__name__, str(note.summary)))
            walk(note.subnotes)

    walk(resource.response.notes)
    return {"status": resource.response.status_code, "notes": out}


def problems(path, result):
    if "error" in result:
        return [f"not fetched: {result['error']}"]
    names = {name for _, name, _ in result["notes"]}
    found = [
        f"REDbot {level}: {name}: {summary}"
        for level, name, summary in result["notes"]
        if level in ("bad", "warning")
    ]
    if result["status"] != 200:
        found.append(f"status {result['status']}")
    if path in PAGE or path in IMAGES:
        if "STORE_NO_STORE" in names:
            found.append("a file of the page that no cache can store (no-store)")
        if "INM_304" not in names:
            found.append("no ETag answered 304 to If-None-Match")
        if path in PAGE and "CONNEG_GZIP_GOOD" not in names:
            found.append("text not gzipped for a client that accepts gzip")
    else:
        if "STORE_NO_STORE" not in names:
            found.append("an answer a cache could store (it must be no-store)")
        if "CONNEG_GZIP_GOOD" in names:
            found.append("an answer compressed (answers are sent as they are)")
    return found


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(notes_of(sys.argv[2])))
        return 0
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    base, answer = sys.argv[1].rstrip("/"), sys.argv[2]
    failed = 0
    for path in PAGE + IMAGES + ["/fhir/r4/metadata", answer]:
        run = subprocess.run(
            [sys.executable, __file__, "--one", base + path],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if run.returncode != 0:
            print(f"{path}: REDbot failed: {run.stderr.strip()}")
            failed += 1
            continue
        result = json.loads(run.stdout)
        found = problems(path, result)
        print(f"{path}: {'PROBLEM' if found else 'ok'}")
        for level, name, summary in result["notes"]:
            print(f"    {level:7} {name}: {summary}")
        for problem in found:
            print(f"  ! {problem}")
        failed += bool(found)
    print(f"redbot: {failed} of {len(PAGE + IMAGES) + 2} URLs with a problem")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
