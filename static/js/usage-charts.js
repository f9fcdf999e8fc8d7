// Stacked bar charts for the usage dashboard, drawn as SVG with DOM APIs (no library, no CDN,
// no inline script: the data comes from the <script type="application/json"> block).
(() => {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const dataEl = document.getElementById("usage-chart-data");
  if (!dataEl) return;
  const data = JSON.parse(dataEl.textContent);

  const WIDTH = 720;
  const HEIGHT = 260;
  const PAD = { top: 12, right: 12, bottom: 42, left: 64 };

  function el(name, attrs = {}, text = null) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
    if (text !== null) node.textContent = text;
    return node;
  }

  const tokenFormat = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const fullFormat = new Intl.NumberFormat();
  function format(metric, value, full = false) {
    if (metric === "cost") {
      const digits = value !== 0 && Math.abs(value) < 0.01 ? 4 : 2;
      return `$${value.toFixed(digits)}`;
    }
    return full ? fullFormat.format(value) : tokenFormat.format(value);
  }

  // 1, 2 or 5 times a power of ten: round tick steps.
  function niceStep(max, ticks) {
    const raw = max / ticks;
    const power = 10 ** Math.floor(Math.log10(raw));
    for (const factor of [1, 2, 5, 10]) {
      if (raw <= factor * power) return factor * power;
    }
    return 10 * power;
  }

  function draw(figure) {
    const metric = figure.dataset.metric;
    const days = data.days;
    const series = data.series;
    const totals = days.map((_, i) => series.reduce((sum, s) => sum + Math.max(0, s[metric][i]), 0));
    const max = Math.max(...totals, 0);

    const svg = el("svg", {
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      role: "img",
      class: "chart-svg",
      "aria-label": `${figure.querySelector("figcaption")?.textContent || metric}; ${days.length} days`,
    });
    const plotW = WIDTH - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;

    if (max <= 0) {
      svg.append(el("text", { x: WIDTH / 2, y: HEIGHT / 2, class: "chart-empty", "text-anchor": "middle" }, "Nothing in this range"));
      figure.append(svg);
      return;
    }
    const step = niceStep(max, 4);
    const top = Math.ceil(max / step) * step;
    const y = (value) => PAD.top + plotH - (value / top) * plotH;

    const grid = el("g", { class: "chart-grid" });
    for (let value = 0; value <= top + step / 2; value += step) {
      grid.append(el("line", { x1: PAD.left, x2: WIDTH - PAD.right, y1: y(value), y2: y(value) }));
      grid.append(el("text", { x: PAD.left - 6, y: y(value) + 4, "text-anchor": "end" }, format(metric, value)));
    }
    svg.append(grid);

    const slot = plotW / days.length;
    const barW = Math.max(1, slot * 0.75);
    const bars = el("g", { class: "chart-bars" });
    days.forEach((day, i) => {
      let base = 0;
      const x = PAD.left + i * slot + (slot - barW) / 2;
      series.forEach((s, index) => {
        const value = Math.max(0, s[metric][i]);
        if (!value) return;
        const rect = el("rect", {
          x,
          y: y(base + value),
          width: barW,
          height: Math.max(0.5, y(base) - y(base + value)),
          class: `series-${index % 10}`,
          "data-series": s.label,
          "data-day": day,
        });
        rect.append(el("title", {}, `${day} · ${s.label}: ${format(metric, value, true)}`));
        bars.append(rect);
        base += value;
      });
    });
    svg.append(bars);

    // Day labels: about eight, so they never overlap.
    const labels = el("g", { class: "chart-axis" });
    const every = Math.max(1, Math.ceil(days.length / 8));
    days.forEach((day, i) => {
      // Every n-th day, and the last one unless it would touch the label before it.
      const last = i === days.length - 1 && i % every >= every / 2;
      if (i % every !== 0 && !last) return;
      const x = PAD.left + i * slot + slot / 2;
      labels.append(el("text", { x, y: HEIGHT - PAD.bottom + 16, "text-anchor": "middle" }, day.slice(5)));
    });
    svg.append(labels);
    figure.append(svg);

    const legend = document.createElement("ul");
    legend.className = "chart-legend";
    series.forEach((s, index) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = `swatch series-${index % 10}`;
      swatch.setAttribute("aria-hidden", "true");
      const total = s[metric].reduce((sum, v) => sum + v, 0);
      item.append(swatch, document.createTextNode(`${s.label} (${format(metric, total, true)})`));
      legend.append(item);
    });
    figure.append(legend);
  }

  document.querySelectorAll("[data-chart]").forEach(draw);
})();
