"""A thin page object over the FiftyOne App (1.22) for the browser tests.

Selectors are the App's ``data-cy`` test ids where it has them (see
/work/shared/reference/app-browser-testing.md); operator forms have none, so
their inputs are found by the label text the plugin gives them.
"""
import re

import numpy as np

GRID = '[data-cy="fo-grid"] [data-cy="looker"] canvas[canvas-loaded="true"]'
LOAD_TIMEOUT = 60_000  # ms, a first load against a fresh server is slow


class App:
    def __init__(self, page, url, dataset, artifacts):
        self.page = page
        self.url = url
        self.dataset = dataset
        self.artifacts = artifacts

    # --- pages and screenshots ---------------------------------------------

    def open(self):
        """Opens the dataset and waits for grid thumbnails; the first load
        against a freshly started server can hang, so it is retried once."""
        target = "%s/datasets/%s" % (self.url, self.dataset.name)
        try:
            self.page.goto(target, timeout=LOAD_TIMEOUT)
            self.wait_grid(timeout=LOAD_TIMEOUT)
        except Exception:  # pylint: disable=broad-except
            self.page.goto(target, timeout=LOAD_TIMEOUT)
            self.wait_grid(timeout=LOAD_TIMEOUT)

    def wait_grid(self, timeout=None):
        self.page.wait_for_selector(GRID, timeout=timeout)

    def wait_grid_settled(self, timeout=30_000):
        """Waits until every rendered thumbnail has drawn (after a reload the
        grid shows placeholders first)."""
        self.page.wait_for_function(
            """() => {
                const lookers = document.querySelectorAll('[data-cy=fo-grid] [data-cy=looker]');
                return lookers.length > 0 && Array.from(lookers).every(
                    e => e.querySelector('canvas[canvas-loaded=true]'));
            }""",
            timeout=timeout,
        )

    def shot(self, name, locator=None, **kwargs):
        """Saves a screenshot (of the page, or of ``locator``) as
        ``test-artifacts/browser/<name>.png``; returns its path."""
        path = self.artifacts / ("%s.png" % name)
        kwargs.setdefault("animations", "disabled")  # finished, not mid-fade
        (locator or self.page).screenshot(path=str(path), **kwargs)
        return path

    def sample_count(self):
        """The count shown above the grid, e.g. 21 for "21 samples"."""
        text = self.page.locator("[data-cy=entry-counts]").inner_text()
        match = re.search(r"([\d,]+)\s+samples?", text)
        assert match, "no sample count in %r" % text
        return int(match.group(1).replace(",", ""))

    def wait_sample_count(self, n, timeout=30_000):
        self.page.wait_for_function(
            "n => { const e = document.querySelector('[data-cy=entry-counts]');"
            " return e && new RegExp('^' + n + ' samples?$').test(e.innerText.trim()); }",
            arg=str(n),
            timeout=timeout,
        )

    def clear_view(self):
        """Back to the whole dataset (the server keeps the last view)."""
        if self.sample_count() != len(self.dataset):
            self.page.locator("[data-cy=btn-clear-view-bar]").click()
            self.wait_sample_count(len(self.dataset))
            self.wait_grid()

    def show_field(self, field, shown=True):
        """Ticks (or unticks) a sidebar field, which shows its value on the
        grid's thumbnails."""
        box = self.page.locator("[data-cy=checkbox-%s] input" % field)
        if box.is_checked() != shown:
            self.page.locator("[data-cy=checkbox-%s]" % field).click()

    def grid_tags(self):
        """The value pills of the rendered thumbnails, in reading order
        (rows top to bottom, left to right): a list of lists of strings."""
        items = self.page.eval_on_selector_all(
            '[data-cy="fo-grid"] [data-cy="looker"]',
            """els => els.map(e => {
                const r = e.getBoundingClientRect();
                const tags = e.querySelector('[class*=lookerTags]');
                return [Math.round(r.top), Math.round(r.left),
                        tags ? Array.from(tags.children).map(t => t.innerText.trim()) : []];
            })""",
        )
        return [tags for _, _, tags in sorted(items, key=lambda x: (x[0], x[1]))]

    # --- operators ----------------------------------------------------------

    def open_operator(self, label):
        """Opens the operator browser (Escape, then backquote), finds the
        operator by its label and opens its form; returns the form."""
        page = self.page
        self.operator_labels(label).get_by_text(label, exact=True).click()
        form = Form(page, page.locator("[data-cy=operators-prompt-modal]"))
        form.execute_button.wait_for()
        return form

    def operator_labels(self, search):
        """Opens the operator browser and searches ``search``; returns the
        browser's list (labels and names of the matching operators)."""
        page = self.page
        page.keyboard.press("Escape")
        page.keyboard.press("`")
        browser = page.locator("[data-cy=operators-browser]")
        browser.wait_for()
        page.fill("[data-cy=operators-browser-search]", search)
        return browser

    def close_dialogs(self):
        """Closes the progress / output dialog an execution leaves open."""
        dialogs = self.page.locator("[role=dialog]")  # not the panels' Close
        for name in ("Done", "Close"):
            button = dialogs.get_by_role("button", name=name, exact=True)
            if button.count() and button.first.is_visible():
                button.first.click()
                button.first.wait_for(state="hidden")

    def notification(self, pattern, timeout=60_000):
        """Waits for a snackbar matching ``pattern``; returns its text."""
        note = self.page.get_by_text(re.compile(pattern)).first
        note.wait_for(timeout=timeout)
        return note.inner_text()

    # --- plotly figures ------------------------------------------------------

    def plotly_plot(self, container, timeout=30_000):
        """The drawn plotly figure inside ``container`` (e.g. an operator's
        form or output), once its bars are on the page."""
        plot = container.locator(".js-plotly-plot").first
        plot.wait_for(state="visible", timeout=timeout)
        plot.locator(".main-svg .barlayer .point path").first.wait_for(state="attached", timeout=timeout)
        return plot

    @staticmethod
    def plotly_title(plot):
        """The figure's title as one line (plotly draws its lines as tspans)."""
        return " ".join(plot.locator(".gtitle").first.text_content().split())

    # --- the Embeddings panel -----------------------------------------------

    def embeddings_panel(self):
        """Opens (or focuses) the Embeddings panel; returns its content."""
        page = self.page
        tab = page.locator("[data-cy=panel-tab-embeddings]")
        if tab.count():
            tab.first.click()
        else:
            page.locator("[data-cy=new-panel-btn]").first.click()
            page.locator("[data-cy=new-panel-option-Embeddings]").click()
        content = page.locator("[data-cy=panel-content-Embeddings]")
        content.wait_for()
        # a promotional card covers part of the panel
        dismiss = page.get_by_role("button", name="Dismiss", exact=True)
        try:
            dismiss.first.wait_for(timeout=3_000)
            dismiss.first.click()
        except Exception:  # pylint: disable=broad-except
            pass
        return content

    def plot_pixels(self, canvas):
        """A screenshot of the plot canvas alone (the legend, hints and other
        overlays hidden for the shot) as an (H, W, 3) uint8 array."""
        import io

        from PIL import Image

        canvas.evaluate(
            """canvas => {
                const r = canvas.getBoundingClientRect();
                for (const el of document.querySelectorAll('body *')) {
                    if (el === canvas || el.contains(canvas) || canvas.contains(el)) continue;
                    const s = el.getBoundingClientRect();
                    if (!s.width || !s.height) continue;
                    const overlaps = s.left < r.right && s.right > r.left && s.top < r.bottom && s.bottom > r.top;
                    if (overlaps && getComputedStyle(el).visibility !== 'hidden') {
                        el.dataset.nclHidden = '1';
                        el.style.visibility = 'hidden';
                    }
                }
            }"""
        )
        try:
            png = canvas.screenshot()
        finally:
            canvas.evaluate(
                """() => document.querySelectorAll('[data-ncl-hidden]').forEach(el => {
                    el.style.visibility = ''; delete el.dataset.nclHidden; })"""
            )
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


class Form:
    """An operator's form (``[data-cy=operators-prompt-modal]``)."""

    def __init__(self, page, modal):
        self.page = page
        self.modal = modal
        self.execute_button = modal.get_by_role("button", name="Execute", exact=True)

    def field(self, label):
        """The innermost form row whose label is ``label``."""
        label_p = self.page.locator("p").get_by_text(label, exact=True)
        return self.modal.locator("div.MuiGrid-item").filter(has=label_p).last

    def choose_radio(self, option_label):
        self.modal.get_by_text(option_label, exact=True).click()

    def choose_autocomplete(self, label, value):
        box = self.field(label).locator("input").first
        box.click()
        box.fill(value)
        self.page.get_by_role("option", name=value, exact=True).click()

    def choose_dropdown(self, label, value):
        combo = self.field(label).locator("[role=combobox]").first
        if combo.inner_text().strip() == value:
            return
        combo.click()
        # an option's accessible name includes its description: match its label
        self.page.get_by_role("option").filter(has=self.page.get_by_text(value, exact=True)).first.click()

    def fill(self, label, value):
        box = self.field(label).locator("input").first
        box.fill(str(value))

    def check(self, label, checked=True):
        box = self.field(label).locator("input[type=checkbox]").first
        box.set_checked(checked)

    def wait_valid(self, timeout=30_000):
        """Waits until the form validates (Execute enabled, no field errors)."""
        from playwright.sync_api import expect

        expect(self.execute_button).to_be_enabled(timeout=timeout)
        expect(self.modal.get_by_text("Required property")).to_have_count(0, timeout=timeout)

    def execute(self, timeout=30_000, output=None):
        """Clicks Execute once the form is valid; waits until the form closes
        or, for operators that show a result, until ``output`` (a label of
        the result) appears in it."""
        self.wait_valid(timeout)
        self.execute_button.click()
        if output is None:
            self.modal.wait_for(state="hidden", timeout=timeout)
        else:
            self.modal.get_by_text(output).first.wait_for(timeout=timeout)
