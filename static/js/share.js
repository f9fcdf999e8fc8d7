// Copy buttons for share links: [data-copy] names an input to copy from, [data-copy-text]
// carries the text itself. Delegated, so panels swapped in by htmx work without set-up.
(() => {
  "use strict";

  async function copy(text, input) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // No clipboard permission (or no secure context): select the text for Ctrl+C instead.
      if (input) {
        input.focus();
        input.select();
      }
      return false;
    }
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy], [data-copy-text]");
    if (!button) return;
    const input = button.dataset.copy ? document.querySelector(button.dataset.copy) : null;
    const text = input ? input.value : button.dataset.copyText;
    if (!text) return;
    const label = button.textContent;
    const copied = await copy(text, input);
    button.textContent = copied ? "Copied" : "Press Ctrl+C to copy";
    setTimeout(() => {
      button.textContent = label;
    }, 2000);
  });
})();
