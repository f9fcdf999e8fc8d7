// What every signed-in page shares: the theme toggle, the sidebar drawer on small screens, and
// times shown in the reader's own time zone. (The chat itself is chat.js.)
(() => {
  "use strict";

  // --- theme: System → Light → Dark → System ----------------------------------------------
  const root = document.documentElement;
  const THEMES = ["system", "light", "dark"];
  const LABELS = { system: "System", light: "Light", dark: "Dark" };
  const themeToggle = document.getElementById("theme-toggle");

  function currentTheme() {
    const theme = root.dataset.theme;
    return theme === "light" || theme === "dark" ? theme : "system";
  }

  function showTheme() {
    if (!themeToggle) return;
    const theme = currentTheme();
    const next = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    themeToggle.textContent = `Theme: ${LABELS[theme]}`;
    themeToggle.title = `Switch to ${LABELS[next].toLowerCase()}`;
  }

  function setTheme(theme) {
    if (theme === "system") delete root.dataset.theme;
    else root.dataset.theme = theme;
    try {
      if (theme === "system") localStorage.removeItem("theme");
      else localStorage.setItem("theme", theme);
    } catch {
      // Not remembered, but still applied to this page.
    }
    showTheme();
  }

  themeToggle?.addEventListener("click", () => {
    setTheme(THEMES[(THEMES.indexOf(currentTheme()) + 1) % THEMES.length]);
  });
  // Another tab changed it: follow.
  window.addEventListener("storage", (event) => {
    if (event.key !== "theme") return;
    const theme = event.newValue === "light" || event.newValue === "dark" ? event.newValue : "system";
    if (theme === "system") delete root.dataset.theme;
    else root.dataset.theme = theme;
    showTheme();
  });
  showTheme();

  // --- the sidebar as a drawer (phones) -----------------------------------------------------
  const drawerToggle = document.getElementById("drawer-toggle");
  const sidebar = document.getElementById("sidebar");
  const backdrop = document.getElementById("drawer-backdrop");

  function setDrawer(open) {
    if (!drawerToggle || !sidebar) return;
    document.body.classList.toggle("drawer-open", open);
    drawerToggle.setAttribute("aria-expanded", String(open));
    if (backdrop) backdrop.hidden = !open;
    if (open) sidebar.querySelector("a, button, input")?.focus();
  }

  drawerToggle?.addEventListener("click", () => {
    setDrawer(!document.body.classList.contains("drawer-open"));
  });
  backdrop?.addEventListener("click", () => setDrawer(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && document.body.classList.contains("drawer-open")) {
      setDrawer(false);
      drawerToggle?.focus();
    }
  });

  // --- times in the reader's time zone ------------------------------------------------------
  const full = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });
  const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  const dayAndTime = new Intl.DateTimeFormat(undefined, {
    month: "short",
    day: "numeric",
    hour: "numeric",
    minute: "2-digit",
  });
  const dayAndYear = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });

  function localizeTimes(scope) {
    const now = new Date();
    for (const el of scope.querySelectorAll("time[datetime]:not([data-localized])")) {
      const date = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(date.getTime())) continue;
      el.dataset.localized = "";
      el.title = full.format(date);
      if (el.closest(".message-meta")) {
        el.textContent = date.toDateString() === now.toDateString() ? timeOnly.format(date) : dayAndTime.format(date);
      } else {
        el.textContent = dayAndYear.format(date);
      }
    }
  }

  window.teamchatUI = { localizeTimes };
  localizeTimes(document);
  document.addEventListener("htmx:load", (event) => localizeTimes(event.target));
})();
