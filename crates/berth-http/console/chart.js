// The two small SVG charts of the overview. Geometry is set with attributes and colours come
// from classes in style.css (the CSP allows no inline style). Each chart has a text
// equivalent: a <title> per mark and an aria-label summary on the <svg>.

import { fmtDuration, svg } from "./dom.js";

const W = 640;
const LABEL_W = 170;
const ROW_H = 18;
const MAX_BARS = 20;

/** The age class of a heartbeat: fresh < 1 min, stale < 5 min, old beyond. */
export function ageClass(ms) {
  if (ms < 60000) return "fresh";
  if (ms < 300000) return "stale";
  return "old";
}

const cut = (s, n) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

/**
 * Horizontal bars of heartbeat age, stalest first: `items` is `[{name, ageMs}]` (only
 * workspaces with a known heartbeat). At most MAX_BARS bars.
 */
export function heartbeatChart(items, labelId) {
  const rows = [...items].sort((a, b) => b.ageMs - a.ageMs).slice(0, MAX_BARS);
  const max = Math.max(60000, ...rows.map((r) => r.ageMs));
  const plotW = W - LABEL_W - 70;
  const height = rows.length * ROW_H + 28;
  const root = svg("svg", {
    viewBox: `0 0 ${W} ${height}`,
    class: "chart",
    role: "img",
    "aria-labelledby": labelId,
  });
  rows.forEach((r, i) => {
    const y = i * ROW_H + 4;
    const w = Math.max(2, (r.ageMs / max) * plotW);
    root.append(
      svg(
        "g",
        { class: `hb ${ageClass(r.ageMs)}` },
        svg("title", {}, `${r.name}: last heartbeat ${fmtDuration(r.ageMs)} ago`),
        svg("text", { x: LABEL_W - 6, y: y + 12, "text-anchor": "end", class: "lbl" }, cut(r.name, 24)),
        svg("rect", { x: LABEL_W, y, width: w.toFixed(1), height: ROW_H - 5, rx: 2, class: "bar" }),
        svg("text", { x: LABEL_W + w + 4, y: y + 12, class: "val" }, fmtDuration(r.ageMs)),
      ),
    );
  });
  const axisY = rows.length * ROW_H + 8;
  root.append(svg("line", { x1: LABEL_W, x2: LABEL_W + plotW, y1: axisY, y2: axisY, class: "axis" }));
  for (const f of [0, 0.5, 1]) {
    const x = LABEL_W + f * plotW;
    root.append(svg("text", { x, y: axisY + 14, "text-anchor": "middle", class: "tick" }, fmtDuration(f * max)));
  }
  return root;
}

/** The bins of the create → online histogram (upper bounds in ms). */
export const BINS = [
  { max: 1000, label: "<1s" },
  { max: 2000, label: "1–2s" },
  { max: 5000, label: "2–5s" },
  { max: 10000, label: "5–10s" },
  { max: 30000, label: "10–30s" },
  { max: 60000, label: "30–60s" },
  { max: 300000, label: "1–5m" },
  { max: Infinity, label: ">5m" },
];

/** Counts of `samples` (ms) per bin. */
export function binCounts(samples) {
  const counts = BINS.map(() => 0);
  for (const s of samples) counts[BINS.findIndex((b) => s < b.max)] += 1;
  return counts;
}

/** A vertical-bar histogram of create → online times (ms). */
export function histogram(samples, labelId) {
  const counts = binCounts(samples);
  const max = Math.max(1, ...counts);
  const H = 150;
  const top = 18;
  const plotH = H - top - 24;
  const slot = W / BINS.length;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": labelId });
  BINS.forEach((b, i) => {
    const hgt = (counts[i] / max) * plotH;
    const x = i * slot + 8;
    const y = top + plotH - hgt;
    root.append(
      svg(
        "g",
        { class: "hist" },
        svg("title", {}, `${b.label}: ${counts[i]} workspace${counts[i] === 1 ? "" : "s"}`),
        svg("rect", { x, y, width: slot - 16, height: Math.max(0, hgt).toFixed(1), rx: 2, class: "bar" }),
        svg("text", { x: x + (slot - 16) / 2, y: y - 4, "text-anchor": "middle", class: "val" }, counts[i] ? counts[i] : ""),
        svg("text", { x: x + (slot - 16) / 2, y: H - 6, "text-anchor": "middle", class: "tick" }, b.label),
      ),
    );
  });
  root.append(svg("line", { x1: 0, x2: W, y1: top + plotH, y2: top + plotH, class: "axis" }));
  return root;
}
