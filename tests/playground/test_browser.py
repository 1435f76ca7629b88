"""The compare page in a real Chromium against a real studio (`manage.py serve`, uvicorn, SSE):
pick three snapshots, stream their answers side by side blind, rate them, see the names revealed,
then find them on the leaderboard. Each page is saved under test-output/screenshots/."""

from tests.browser import SHOTS, browser_marks, log_in, open_page, shot

pytestmark = browser_marks


def test_compare_rate_reveal_and_leaderboard_in_the_browser(playground_studio):
    from playwright.sync_api import expect

    studio = playground_studio
    base, first, second, final = studio.extra["names"]
    expect.set_options(timeout=60_000)  # the first request loads the models
    SHOTS.mkdir(parents=True, exist_ok=True)
    # page.errors includes what the Content-Security-Policy blocked.
    with open_page(timeout_ms=60_000) as page:
        log_in(page, studio.url, "admin", studio.password)

        # The dashboard's "Open in playground" link preselects a snapshot.
        page.goto(studio.url + "/playground/?snapshot=" + first)
        expect(page.locator(f'#snapshot-chips [data-snapshot="{first}"]')).to_be_visible()
        page.fill("#snapshot-search", "tiny")
        page.locator(f'#snapshot-results [data-snapshot="{base}"]').click()
        page.fill("#snapshot-search", "")
        page.fill("#snapshot-epoch", "3")
        page.locator(f'#snapshot-results [data-snapshot="{final}"]').click()
        expect(page.locator("#snapshot-chips .chip")).to_have_count(3)
        page.fill("#system-prompt", "Answer with one intent.")
        page.fill(".turn-content", "where is my order 1234")
        page.fill("input[name=temperature]", "0")
        page.fill("input[name=max_tokens]", "8")
        shot(page, "playground-compare-setup.png")
        page.click("#run")

        # Outputs stream into three blind columns; rating unlocks when all have finished.
        expect(page.locator("#submit-rating")).to_be_enabled()
        expect(page.locator(".column")).to_have_count(3)
        expect(page.locator(".column .column-label")).to_have_text(["Model A", "Model B", "Model C"])
        expect(page.locator(".column[data-done='1']")).to_have_count(3)
        # The picker lists what was chosen; which column is which stays hidden.
        columns = page.inner_html("#columns")
        assert not any(name in columns for name in (base, first, final))
        # So does each column's timing (speed would tell a base model from a full fine-tune).
        assert page.locator(".column .timing").first.inner_text().startswith("finished")
        shot(page, "playground-compare-streamed.png")

        for position, score in ((0, 5), (1, 3), (2, 1)):
            page.locator(f"input[name=score_{position}][value='{score}']").check()
        page.fill("textarea[name=comment_0]", "right intent")
        page.locator("input[name=verdict][value='best:0']").check()
        page.click("#submit-rating")

        # Names are revealed only now.
        expect(page.locator("#rate-status")).to_contain_text("Names revealed")
        revealed = page.locator(".column .snapshot-name").all_inner_texts()
        assert page.locator(".column .timing").first.inner_text().endswith("tokens")
        assert sorted(revealed) == sorted([base, first, final])
        shot(page, "playground-compare-revealed.png")

        page.click("#rate-status a")
        expect(page.locator("#leaderboard tbody tr[data-snapshot]")).to_have_count(3)
        top = page.locator("#leaderboard tbody tr[data-snapshot]").first.get_attribute("data-snapshot")
        assert top == revealed[0]  # the one picked best ranks first
        shot(page, "playground-leaderboard.png")
        assert page.errors == []
