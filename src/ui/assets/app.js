// flux ui: draws the grid and a run's Gantt chart on a canvas (one element, whatever the
// number of tasks), moves a cell cursor with the keyboard, and applies the changes that
// /api/events streams while builds run. Plain ES module, no build step.

const COLORS = {
  '#': '#009E73', '=': '#56B4E9', 'X': '#D55E00', '^': '#E69F00', '!': '#CC79A7',
  '~': '#0072B2', 'r': '#F0E442', 'w': '#999999', 'q': '#BBBBBB', 'c': '#FFFFFF', '.': '#DDDDDD',
};
const DARK = new Set(['~', 'X']);
const NAMES = {
  '#': 'success', '=': 'skipped', 'X': 'failed', '^': 'upstream_failed', '!': 'interrupted',
  '~': 'running', 'r': 'retrying', 'w': 'waiting', 'q': 'queued', 'c': 'cleared', '.': 'unknown', ' ': 'no task',
};

let view = null; // the grid or Gantt on the page now

// What the page drew, for tests and benchmarks (read through WebDriver): `window.flux`.
// `firstPaint` is performance.now() when the canvas was first drawn, `lastPaintMs` how
// long the last redraw took, `paints` how many there were; `view` the grid or Gantt.
const stats = { firstPaint: null, lastPaintMs: null, paints: 0, view: null };
window.flux = stats;

// ----- a scrolled canvas: only the visible part is drawn -----

function scroller(wrap, canvas, width, height, draw) {
  const spacer = wrap.querySelector('.spacer');
  spacer.style.width = width + 'px';
  spacer.style.height = height + 'px';
  let queued = false;
  const paint = () => {
    queued = false;
    const dpr = window.devicePixelRatio || 1;
    const w = wrap.clientWidth, h = wrap.clientHeight;
    if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
      canvas.width = w * dpr; canvas.height = h * dpr;
      canvas.style.width = w + 'px'; canvas.style.height = h + 'px';
    }
    const t0 = performance.now();
    const ctx = canvas.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    draw(ctx, wrap.scrollLeft, wrap.scrollTop, w, h);
    const t1 = performance.now();
    stats.lastPaintMs = t1 - t0; stats.paints++;
    if (stats.firstPaint === null) stats.firstPaint = t1;
  };
  const request = () => { if (!queued) { queued = true; requestAnimationFrame(paint); } };
  wrap.addEventListener('scroll', request, { passive: true });
  window.addEventListener('resize', request);
  request();
  return { request, paint, resize(wd, ht) { spacer.style.width = wd + 'px'; spacer.style.height = ht + 'px'; request(); } };
}

// ----- the grid -----

function initGrid() {
  const canvas = document.getElementById('grid-canvas');
  const dataEl = document.getElementById('grid-data');
  if (!canvas || !dataEl) return null;
  const data = JSON.parse(dataEl.textContent);
  const wrap = document.getElementById('grid-wrap');
  const say = document.getElementById('grid-cursor');
  const CW = 14, CH = 18, LABEL = 220, HEAD = 70;
  // Columns: the kinds side by side, each newest first.
  const cols = []; const colOf = {};
  for (const k of data.kinds) {
    colOf[k.kind] = {};
    k.intervals.forEach((iv, i) => { colOf[k.kind][iv] = cols.length; cols.push({ kind: k.kind, interval: iv, i }); });
    cols.push(null); // a gap between kinds
  }
  const rowOf = {};
  data.rows.forEach((r, i) => { rowOf[r.row] = i; r.chars = r.cells.split(''); r.lateSet = new Set(r.late || []); });
  const cellOf = (ri, ci) => {
    const c = cols[ci]; const r = data.rows[ri];
    if (!c || !r || c.kind !== r.kind) return null;
    return { ch: r.chars[c.i] || ' ', row: r, col: c, late: r.lateSet.has(c.i) };
  };
  let cur = { r: 0, c: 0 };
  const width = LABEL + cols.length * CW, height = HEAD + data.rows.length * CH;
  const draw = (ctx, sx, sy, w, h) => {
    ctx.font = '11px ui-monospace, monospace';
    ctx.textBaseline = 'middle';
    const c0 = Math.max(0, Math.floor(sx / CW)), c1 = Math.min(cols.length, Math.ceil((sx + w - LABEL) / CW) + 1);
    const r0 = Math.max(0, Math.floor(sy / CH)), r1 = Math.min(data.rows.length, Math.ceil((sy + h - HEAD) / CH) + 1);
    for (let ri = r0; ri < r1; ri++) {
      const y = HEAD + ri * CH - sy;
      for (let ci = c0; ci < c1; ci++) {
        const cell = cellOf(ri, ci);
        if (!cell || cell.ch === ' ') continue;
        const x = LABEL + ci * CW - sx;
        ctx.fillStyle = COLORS[cell.ch] || '#DDD';
        ctx.fillRect(x + 1, y + 1, CW - 2, CH - 2);
        ctx.fillStyle = DARK.has(cell.ch) ? '#fff' : '#111';
        ctx.fillText(cell.ch, x + 3, y + CH / 2);
        if (cell.late) {
          // Late (SLA missed): a black corner, the legend's second cue.
          ctx.fillStyle = '#000';
          ctx.beginPath(); ctx.moveTo(x + CW - 7, y + 1); ctx.lineTo(x + CW - 1, y + 1); ctx.lineTo(x + CW - 1, y + 7); ctx.closePath(); ctx.fill();
        }
      }
    }
    // The cursor.
    ctx.strokeStyle = '#000'; ctx.lineWidth = 2;
    ctx.strokeRect(LABEL + cur.c * CW - sx, HEAD + cur.r * CH - sy, CW, CH);
    // Row labels and the interval header stay in place.
    ctx.fillStyle = '#fff'; ctx.fillRect(0, HEAD, LABEL, h); ctx.fillRect(0, 0, w, HEAD);
    ctx.fillStyle = '#111';
    for (let ri = r0; ri < r1; ri++) {
      const y = HEAD + ri * CH - sy;
      if (y < HEAD - 2) continue;
      ctx.fillText(data.rows[ri].row.slice(0, 30), 4, y + CH / 2);
    }
    ctx.save();
    for (let ci = c0; ci < c1; ci++) {
      const c = cols[ci]; if (!c || c.i % 5 !== 0) continue;
      ctx.save(); ctx.translate(LABEL + ci * CW - sx + CW / 2, HEAD - 4); ctx.rotate(-Math.PI / 3);
      ctx.fillText(c.interval, 0, 0); ctx.restore();
    }
    ctx.restore();
  };
  const sc = scroller(wrap, canvas, width, height, draw);
  const taskOf = (cell) => cell.row.template.replace('{}', cell.col.interval);
  const announce = () => {
    const cell = cellOf(cur.r, cur.c);
    if (!cell) { say.textContent = data.rows[cur.r] ? data.rows[cur.r].row + ': no task here' : ''; return; }
    say.textContent = `${taskOf(cell)}: ${NAMES[cell.ch] || cell.ch}${cell.late ? ', late (SLA missed)' : ''}`;
  };
  const move = (dr, dc) => {
    cur.r = Math.max(0, Math.min(data.rows.length - 1, cur.r + dr));
    cur.c = Math.max(0, Math.min(cols.length - 1, cur.c + dc));
    const x = LABEL + cur.c * CW, y = HEAD + cur.r * CH;
    if (x - LABEL < wrap.scrollLeft) wrap.scrollLeft = x - LABEL;
    if (x + CW > wrap.scrollLeft + wrap.clientWidth) wrap.scrollLeft = x + CW - wrap.clientWidth;
    if (y - HEAD < wrap.scrollTop) wrap.scrollTop = y - HEAD;
    if (y + CH > wrap.scrollTop + wrap.clientHeight) wrap.scrollTop = y + CH - wrap.clientHeight;
    announce(); sc.request();
  };
  const open = () => { const cell = cellOf(cur.r, cur.c); if (cell && cell.ch !== ' ') location.href = '/tasks/' + encodeURIComponent(taskOf(cell)); };
  canvas.addEventListener('keydown', (e) => {
    const k = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1], PageUp: [-20, 0], PageDown: [20, 0], Home: [0, -1e9], End: [0, 1e9] }[e.key];
    if (k) { e.preventDefault(); move(k[0], k[1]); } else if (e.key === 'Enter') { e.preventDefault(); open(); }
  });
  canvas.addEventListener('click', (e) => {
    const rect = canvas.getBoundingClientRect();
    const x = e.clientX - rect.left + wrap.scrollLeft - LABEL, y = e.clientY - rect.top + wrap.scrollTop - HEAD;
    if (x < 0 || y < 0) return;
    cur = { r: Math.floor(y / CH), c: Math.floor(x / CW) }; move(0, 0);
  });
  canvas.addEventListener('dblclick', open);
  canvas.addEventListener('focus', announce);
  return {
    kind: 'grid',
    // The symbol drawn for a row (a step) at an interval, or null if it is not on the page.
    cell(row, interval) {
      const r = data.rows[rowOf[row]]; const ci = r && colOf[r.kind] && colOf[r.kind][interval];
      return ci === undefined ? null : (r.chars[cols[ci].i] || ' ');
    },
    rows() { return data.rows.map((r) => ({ row: r.row, cells: r.chars.join('') })); },
    // Where a row's cell at an interval is drawn now, in CSS pixels of the canvas, and
    // whether it is marked late; null if it is not on the page.
    box(row, interval) {
      const ri = rowOf[row]; const r = data.rows[ri]; const ci = r && colOf[r.kind] && colOf[r.kind][interval];
      if (ci === undefined) return null;
      return { x: LABEL + ci * CW - wrap.scrollLeft, y: HEAD + ri * CH - wrap.scrollTop, w: CW, h: CH, late: r.lateSet.has(cols[ci].i) };
    },
    // Scroll to (left, top) and redraw now; the redraw's milliseconds.
    scrollAndPaint(left, top) { wrap.scrollLeft = left; wrap.scrollTop = top; const t = performance.now(); sc.paint(); return performance.now() - t; },
    change(ch) {
      let dirty = false, outside = 0;
      for (const t of ch.tasks) {
        const ri = t.row == null ? undefined : rowOf[t.row];
        const r = data.rows[ri];
        const ci = r && colOf[r.kind] && colOf[r.kind][t.interval ?? ''];
        // A task of a row or an interval not on this page: say so, do not move the page.
        if (ci === undefined) { outside++; continue; }
        r.chars[cols[ci].i] = t.symbol; dirty = true;
      }
      if (dirty) { sc.request(); announce(); }
      return outside;
    },
  };
}

// ----- a run's Gantt chart -----

function initGantt() {
  const canvas = document.getElementById('gantt-canvas');
  const dataEl = document.getElementById('run-data');
  if (!canvas || !dataEl) return null;
  let data = JSON.parse(dataEl.textContent);
  const wrap = document.getElementById('gantt-wrap');
  const say = document.getElementById('gantt-cursor');
  const RH = 14, LABEL = 240, W = 1000;
  let cur = 0;
  const span = () => {
    let m = 0.001;
    const now = Date.now() / 1000 - data.run.started_at;
    for (let i = 0; i < data.start.length; i++) m = Math.max(m, data.end[i] ?? now);
    return m;
  };
  let total = span();
  const draw = (ctx, sx, sy, w, h) => {
    ctx.font = '11px ui-monospace, monospace'; ctx.textBaseline = 'middle';
    const scale = W / total;
    const r0 = Math.max(0, Math.floor(sy / RH)), r1 = Math.min(data.tasks.length, Math.ceil((sy + h) / RH) + 1);
    const now = Date.now() / 1000 - data.run.started_at;
    for (let i = r0; i < r1; i++) {
      const y = i * RH - sy;
      const ch = data.status[i];
      const x0 = LABEL + data.start[i] * scale - sx, x1 = LABEL + (data.end[i] ?? now) * scale - sx;
      ctx.fillStyle = COLORS[ch] || '#DDD';
      ctx.fillRect(x0, y + 1, Math.max(2, x1 - x0), RH - 2);
      ctx.fillStyle = '#111'; ctx.fillText(ch, Math.max(x1, x0 + 2) + 3, y + RH / 2);
      if (i === cur) { ctx.strokeStyle = '#000'; ctx.lineWidth = 2; ctx.strokeRect(0, y, w, RH); }
    }
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, LABEL, h); ctx.fillStyle = '#111';
    for (let i = r0; i < r1; i++) ctx.fillText(data.tasks[i].slice(0, 34), 4, i * RH - sy + RH / 2);
  };
  const sc = scroller(wrap, canvas, LABEL + W + 40, data.tasks.length * RH, draw);
  const announce = () => {
    if (!data.tasks.length) { say.textContent = 'no attempts'; return; }
    const end = data.end[cur];
    say.textContent = `${data.tasks[cur]}: ${NAMES[data.status[cur]] || data.status[cur]}, from ${data.start[cur].toFixed(1)} s` + (end == null ? ', running' : ` to ${end.toFixed(1)} s`);
  };
  canvas.addEventListener('keydown', (e) => {
    const d = { ArrowUp: -1, ArrowDown: 1, PageUp: -20, PageDown: 20, Home: -1e9, End: 1e9 }[e.key];
    if (d !== undefined) {
      e.preventDefault();
      cur = Math.max(0, Math.min(data.tasks.length - 1, cur + d));
      const y = cur * RH;
      if (y < wrap.scrollTop) wrap.scrollTop = y;
      if (y + RH > wrap.scrollTop + wrap.clientHeight) wrap.scrollTop = y + RH - wrap.clientHeight;
      announce(); sc.request();
    } else if (e.key === 'Enter' && data.tasks[cur]) {
      location.href = '/tasks/' + encodeURIComponent(data.tasks[cur]) + '?attempt=' + data.attempt_ids[cur];
    }
  });
  canvas.addEventListener('focus', announce);
  let fetching = false, again = false;
  const refresh = async () => {
    if (fetching) { again = true; return; }
    fetching = true;
    try {
      const r = await fetch('/api/runs/' + data.run.id);
      if (r.ok) { data = await r.json(); total = span(); sc.resize(LABEL + W + 40, data.tasks.length * RH); }
    } finally { fetching = false; if (again) { again = false; setTimeout(refresh, 300); } }
  };
  const tick = setInterval(() => { if (data.run.ended_at == null) sc.request(); }, 1000);
  return {
    kind: 'gantt',
    // The bars drawn: one per attempt, with its task, status symbol, start and end (s).
    bars() { return data.tasks.map((t, i) => ({ task: t, status: data.status[i], start: data.start[i], end: data.end[i] })); },
    change(ch) { if (ch.runs || ch.tasks.some((t) => t.run_id === data.run.id)) refresh(); },
    stop() { clearInterval(tick); },
  };
}

// ----- live changes -----

let events = null;
function listen() {
  if (events || !window.EventSource) return;
  events = new EventSource('/api/events');
  const live = () => document.getElementById('live');
  events.addEventListener('hello', () => { const l = live(); if (l) l.textContent = 'live'; });
  events.addEventListener('change', (e) => {
    const ch = JSON.parse(e.data);
    const l = live(); if (l) l.textContent = `live: ${ch.tasks.length} changes at ${new Date().toLocaleTimeString()}`;
    const outside = view ? view.change(ch) : 0;
    if (outside && l) l.textContent += ` (${outside} of them off this page: reload to see them)`;
  });
  events.addEventListener('reload', () => { if (view) location.reload(); });
  events.onerror = () => { const l = live(); if (l) l.textContent = 'not live (reconnecting)'; };
}

function init() {
  // htmx's onLoad and DOMContentLoaded may both call this for one page: once per canvas.
  const canvas = document.querySelector('#grid-canvas, #gantt-canvas');
  if (canvas && canvas.dataset.ready) return;
  if (view && view.stop) view.stop();
  view = initGrid() || initGantt();
  stats.view = view;
  if (canvas) canvas.dataset.ready = '1';
  listen();
}

if (window.htmx) window.htmx.onLoad((el) => { if (el === document.body || el.querySelector?.('canvas')) init(); });
if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
