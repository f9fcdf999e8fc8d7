// The theme the user chose (light or dark), applied before the first paint. Without a choice
// the page follows the system setting (app.css's prefers-color-scheme rules). ui.js has the toggle.
(() => {
  "use strict";
  try {
    const theme = localStorage.getItem("theme");
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
  } catch {
    // Storage can be blocked; the system setting then applies.
  }
})();
