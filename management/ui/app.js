// Exchange dashboard: plain JavaScript over the management API. Every datum
// comes from /exchange/* with the bearer token (kept in sessionStorage) in
// an Authorization header; live changes come from GET /exchange/events,
// read with fetch (EventSource cannot send the header). An event marks what
// it touches as stale; one debounced refresh re-reads only that. Nothing
// polls. Data is put in the page with textContent, never as HTML.
'use strict';

const TOKEN_KEY = 'exchange.token';
const PAGE_TARGETS = 50;
const PAGE_CHANNELS = 100;
const PAGE_BATCHES = 50;
const MAX_EVENTS = 200;
const DEBOUNCE_MS = 250;
const STATUSES = ['', 'CREATED', 'PENDING', 'IN_PROGRESS', 'SUCCEEDED', 'ERROR'];

const $ = (id) => document.getElementById(id);

// el builds an element: el('td', {className: 'x'}, 'text', child, ...).
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (k === 'dataset') Object.assign(e.dataset, v);
      else e[k] = v;
    }
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function authHeaders(extra) {
  const h = Object.assign({}, extra);
  const tok = sessionStorage.getItem(TOKEN_KEY);
  if (tok) h.Authorization = 'Bearer ' + tok;
  return h;
}

// api calls the management API and returns {data, next}: the decoded body
// and the cursor of the next page, if any.
async function api(path, opts = {}) {
  const res = await fetch(path, Object.assign({}, opts, {
    headers: authHeaders(Object.assign({Accept: 'application/json'}, opts.headers)),
    cache: 'no-store',
  }));
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = text; }
  if (res.status === 401) needLogin();
  if (!res.ok) throw new ApiError(res.status, (data && data.message) || res.statusText);
  return {data, next: res.headers.get('X-Next-Cursor') || ''};
}

function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== undefined && v !== null) p.set(k, v);
  const s = p.toString();
  return s ? '?' + s : '';
}

const fmtTime = (t) => t ? new Date(t).toLocaleTimeString() : '';
const enc = encodeURIComponent;

// ---- state -----------------------------------------------------------

const state = {
  targets: {cursors: [''], page: 0, next: '', items: []},
  channels: {cursors: [''], page: 0, next: ''},
  batches: {cursors: [''], page: 0, next: '', status: ''},
  selected: '',
  primaries: new Map(), // target -> {connectorId, channelId, epoch}, from listings and events
  gen: 0,               // bumped on login: stale loops stop
};

// ---- refresh scheduling -----------------------------------------------

const dirty = new Set();
let timer = null;

// touch marks parts stale; one refresh runs DEBOUNCE_MS after the first.
function touch(...parts) {
  for (const p of parts) dirty.add(p);
  if (!timer) timer = setTimeout(flush, DEBOUNCE_MS);
}

// now refreshes parts at once (the user asked), with whatever was pending.
function now(...parts) {
  for (const p of parts) dirty.add(p);
  if (timer) { clearTimeout(timer); timer = null; }
  flush();
}

async function flush() {
  timer = null;
  const parts = [...dirty];
  dirty.clear();
  const jobs = [];
  if (parts.includes('cluster')) jobs.push(loadCluster());
  if (parts.includes('targets')) jobs.push(loadTargets());
  if (parts.includes('channels')) jobs.push(loadChannels());
  if (parts.includes('latency')) jobs.push(loadLatency());
  if (parts.includes('batches')) jobs.push(loadBatches());
  await Promise.allSettled(jobs);
}

const ALL = ['cluster', 'targets', 'channels', 'latency', 'batches'];

// ---- cluster -----------------------------------------------------------

// readiness reads GET /readyz (open, like every probe): "ready" or why not.
async function readiness() {
  try {
    const res = await fetch('/readyz', {cache: 'no-store'});
    if (res.ok) return 'ready';
    const body = await res.json().catch(() => ({}));
    return body.message || 'not ready';
  } catch (e) {
    return 'unreachable';
  }
}

async function loadCluster() {
  const [{data: c}, ready] = await Promise.all([api('/exchange/cluster'), readiness()]);
  $('node').textContent = 'node ' + c.nodeId;
  const leader = c.leaderId ? 'leader ' + c.leaderId : 'no leader';
  $('cluster-summary').textContent = `this node: ${c.state}, ${ready} · ${leader} · term ${c.term} · commit ${c.commitIndex} · applied ${c.appliedIndex}`;
  const rows = (c.members || []).map((m) => el('tr', {dataset: {node: m.nodeId}},
    el('td', null, m.nodeId),
    el('td', null, el('span', {className: 'badge ' + (m.state === 'alive' ? 'ok' : 'bad')}, m.state)),
    el('td', null, m.suffrage),
    el('td', null, m.leader ? el('span', {className: 'star'}, '★ leader') : ''),
    el('td', null, m.raftAddress || ''),
    el('td', null, m.grpcAddress || '')));
  if (rows.length === 0) rows.push(el('tr', null, el('td', {colSpan: 6}, c.nodeId + ' (alone)')));
  $('cluster').tBodies[0].replaceChildren(...rows);
}

// ---- targets -------------------------------------------------------------

function primaryOf(channels) {
  const p = channels.find((ch) => ch.primary);
  return p ? {connectorId: p.connectorId, channelId: p.id, epoch: p.epoch} : null;
}

async function loadTargets() {
  const t = state.targets;
  const {data, next} = await api('/exchange/targets' + qs({limit: PAGE_TARGETS, cursor: t.cursors[t.page], view: 'summary'}));
  t.items = data || [];
  t.next = next;
  for (const tg of t.items) {
    const p = primaryOf(tg.channels || []);
    if (p) state.primaries.set(tg.id, p); else state.primaries.delete(tg.id);
  }
  if (!state.selected && t.items.length > 0) select(t.items[0].id);
  renderTargets();
  renderPrimary();
}

function renderTargets() {
  const t = state.targets;
  const items = t.items.map((tg) => {
    const chs = tg.channels || [];
    const active = chs.filter((c) => c.active).length;
    const p = state.primaries.get(tg.id);
    const li = el('li', {dataset: {target: tg.id}, className: tg.id === state.selected ? 'selected' : ''},
      el('span', null, tg.id),
      el('span', {className: 'meta'}, `${active}/${chs.length} channels` + (p ? ` · ★ ${p.connectorId || p.channelId}` : ' · no primary')));
    li.addEventListener('click', () => select(tg.id));
    return li;
  });
  if (items.length === 0) items.push(el('li', {className: 'meta'}, 'no target has a channel yet'));
  $('targets').replaceChildren(...items);
  $('targets-page').textContent = 'page ' + (t.page + 1);
  $('targets-prev').disabled = t.page === 0;
  $('targets-next').disabled = !t.next;
}

function select(id) {
  if (state.selected !== id) {
    state.selected = id;
    state.channels.cursors = [''];
    state.channels.page = 0;
    $('send-target').value = id;
  }
  $('target-id').textContent = id;
  for (const li of $('targets').children) li.classList.toggle('selected', li.dataset.target === id);
  renderPrimary();
  now('channels', 'latency');
}

// renderPerNode writes how many channels (active ones) the selected target
// has on each node, from the targets page (which lists them all).
function renderPerNode() {
  const tg = state.targets.items.find((x) => x.id === state.selected);
  if (!tg) { $('per-node').textContent = ''; return; }
  const by = new Map();
  for (const ch of tg.channels || []) {
    const n = by.get(ch.node) || {all: 0, active: 0};
    n.all++;
    if (ch.active) n.active++;
    by.set(ch.node, n);
  }
  $('per-node').textContent = 'channels per node: ' + ([...by].sort().map(([node, n]) => `${node} ${n.active}/${n.all}`).join(' · ') || 'none');
}

function renderPrimary() {
  renderPerNode();
  const p = state.primaries.get(state.selected);
  const line = $('primary');
  if (!state.selected) { line.replaceChildren('select a target'); return; }
  if (!p) { line.replaceChildren(el('span', {className: 'muted'}, 'no primary')); return; }
  line.replaceChildren('primary ', el('strong', {id: 'primary-connector'}, p.connectorId || '?'),
    ' · channel ', p.channelId, ' · epoch ', el('strong', {id: 'primary-epoch'}, String(p.epoch)));
}

// ---- channels ------------------------------------------------------------

async function loadChannels() {
  if (!state.selected) return;
  const c = state.channels;
  const target = state.selected;
  const {data, next} = await api(`/exchange/targets/${enc(target)}/channels` + qs({limit: PAGE_CHANNELS, cursor: c.cursors[c.page]}));
  if (target !== state.selected) return;
  c.next = next;
  const rows = (data || []).map((ch) => el('tr', {
    className: (ch.primary ? 'primary' : '') + (ch.active ? '' : ' inactive'),
    dataset: {connector: ch.connectorId, channel: ch.id, primary: String(ch.primary)},
  },
  el('td', null, ch.primary ? el('span', {className: 'star', title: 'primary'}, '★') : ''),
  el('td', null, ch.connectorId),
  el('td', null, ch.id),
  el('td', null, ch.node + (ch.local ? ' (this node)' : '')),
  el('td', null, ch.active ? 'yes' : 'no'),
  el('td', null, ch.primary ? String(ch.epoch) : ''),
  el('td', null, String(ch.inFlight)),
  el('td', null, fmtTime(ch.lastHealthyAt)),
  el('td', null, fmtTime(ch.registeredAt))));
  if (rows.length === 0) rows.push(el('tr', null, el('td', {colSpan: 9, className: 'muted'}, 'no channel')));
  $('channels').tBodies[0].replaceChildren(...rows);
  const pri = (data || []).find((ch) => ch.primary);
  if (pri) {
    state.primaries.set(target, {connectorId: pri.connectorId, channelId: pri.id, epoch: pri.epoch});
    renderPrimary();
  }
  $('channels-page').textContent = 'page ' + (c.page + 1);
  $('channels-prev').disabled = c.page === 0;
  $('channels-next').disabled = !c.next;
}

// ---- latency ---------------------------------------------------------------

function fmtBound(s) {
  if (s === null) return '>';
  if (s < 0.001) return Math.round(s * 1e6) + 'µs';
  if (s < 1) return +(s * 1000).toPrecision(3) + 'ms';
  return s + 's';
}

async function loadLatency() {
  if (!state.selected) return;
  const target = state.selected;
  let l;
  try {
    ({data: l} = await api(`/exchange/targets/${enc(target)}/latency`));
  } catch (e) {
    $('latency-summary').textContent = e.status === 501 ? '(not measured by this server)' : '';
    $('latency').replaceChildren();
    return;
  }
  if (target !== state.selected) return;
  const max = Math.max(1, ...l.buckets.map((b) => b.count));
  const mean = l.count ? (l.sumSeconds / l.count * 1000).toFixed(2) + ' ms mean' : 'no command yet';
  $('latency-summary').textContent = `${l.count} sent · ${mean}`;
  const bars = l.buckets.map((b, i) => {
    const prev = i > 0 ? l.buckets[i - 1].leSeconds : 0;
    const range = b.leSeconds === null ? `> ${fmtBound(prev)}` : `≤ ${fmtBound(b.leSeconds)}`;
    const bar = el('div', {className: 'bar' + (b.count ? '' : ' empty'), title: `${range}: ${b.count}`});
    bar.style.height = Math.max(1, Math.round(100 * b.count / max)) + '%'; // CSSOM: allowed by the CSP
    return bar;
  });
  const labels = l.buckets.map((b, i) => el('span', null, i % 3 === 0 || b.leSeconds === null ? fmtBound(b.leSeconds) : ''));
  $('latency').replaceChildren(...bars);
  let lab = $('latency-labels');
  if (!lab) {
    lab = el('div', {id: 'latency-labels', className: 'hist-labels'});
    $('latency').after(lab);
  }
  lab.replaceChildren(...labels);
}

// ---- batches ---------------------------------------------------------------

async function loadBatches() {
  const b = state.batches;
  const {data, next} = await api('/exchange/batchs' + qs({status: b.status, limit: PAGE_BATCHES, cursor: b.cursors[b.page], view: 'summary'}));
  b.next = next;
  const rows = (data || []).map((bt) => {
    const cmds = el('ul', {className: 'cmds'}, ...(bt.commands || []).map((c) =>
      el('li', null, c.command.type + ' ', el('span', {className: 'badge ' + c.status}, c.status),
        c.reply && c.reply.code ? ` code ${c.reply.code}` : '', c.errorDetails ? ' · ' + c.errorDetails : '')));
    return el('tr', {dataset: {batch: bt.id}},
      el('td', {title: bt.id}, bt.key || bt.id.slice(0, 8)),
      el('td', null, bt.targetId),
      el('td', null, el('span', {className: 'badge ' + bt.status}, bt.status)),
      el('td', null, `${bt.retry}/${bt.maxRetry}`),
      el('td', null, fmtTime(bt.updatedAt)),
      el('td', null, cmds, bt.errorDetails ? el('div', {className: 'error'}, bt.errorDetails) : null));
  });
  if (rows.length === 0) rows.push(el('tr', null, el('td', {colSpan: 6, className: 'muted'}, 'no batch')));
  $('batches').tBodies[0].replaceChildren(...rows);
  $('batches-page').textContent = 'page ' + (b.page + 1);
  $('batches-prev').disabled = b.page === 0;
  $('batches-next').disabled = !b.next;
}

function renderStatusTabs() {
  $('batch-status').replaceChildren(...STATUSES.map((s) => {
    const btn = el('button', {type: 'button', className: s === state.batches.status ? 'active' : ''}, s || 'ALL');
    btn.addEventListener('click', () => {
      state.batches.status = s;
      state.batches.cursors = [''];
      state.batches.page = 0;
      renderStatusTabs();
      now('batches');
    });
    return btn;
  }));
}

// pager wires prev/next buttons to a paged listing.
function pager(name, st, part) {
  $(name + '-prev').addEventListener('click', () => {
    if (st.page > 0) { st.page--; now(part); }
  });
  $(name + '-next').addEventListener('click', () => {
    if (!st.next) return;
    st.cursors[st.page + 1] = st.next;
    st.page++;
    now(part);
  });
}

// ---- send ------------------------------------------------------------------

async function send(ev) {
  ev.preventDefault();
  const target = $('send-target').value.trim();
  const body = {type: $('send-type').value.trim(), primary: $('send-primary').checked};
  const raw = $('send-payload').value.trim();
  if (raw) {
    try { body.payload = JSON.parse(raw); } catch (e) {
      $('reply-meta').textContent = 'payload: not JSON: ' + e.message;
      $('reply').textContent = '';
      return;
    }
  }
  const ms = parseInt($('send-timeout').value, 10);
  if (ms > 0) body.timeoutMs = ms;
  $('send').disabled = true;
  $('reply-meta').textContent = 'sending…';
  $('reply').textContent = '';
  const started = performance.now();
  try {
    const {data: r} = await api(`/exchange/targets/${enc(target)}/commands`, {
      method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)});
    const took = Math.round(performance.now() - started);
    $('reply-meta').textContent = `${r.status} from connector ${r.connectorId || '?'} (channel ${r.channelId || '?'}, node ${r.nodeId || '?'}) in ${took} ms`;
    $('reply').textContent = JSON.stringify(r, null, 2);
  } catch (e) {
    $('reply-meta').textContent = `failed: ${e.status || ''} ${e.message}`;
  } finally {
    $('send').disabled = false;
    if (target === state.selected) now('latency', 'channels');
  }
}

// ---- events ------------------------------------------------------------------

function describe(e) {
  const parts = [];
  if (e.connectorId) parts.push('connector ' + e.connectorId);
  if (e.channelId) parts.push('channel ' + e.channelId);
  if (e.nodeId) parts.push('node ' + e.nodeId);
  if (e.epoch) parts.push('epoch ' + e.epoch);
  if (e.batchId) parts.push('batch ' + e.batchId);
  if (e.status) parts.push(e.status);
  if (e.replacedBy) parts.push('replaced by ' + e.replacedBy);
  if (e.dropped) parts.push(e.dropped + ' events dropped: refreshing');
  return parts.join(' · ');
}

function kindClass(k) {
  if (k === 'primary_elected' || k === 'batch_succeeded' || k === 'node_joined' || k === 'channel_registered') return 'ok';
  if (k === 'primary_evicted' || k === 'batch_failed' || k === 'node_left' || k === 'dropped') return 'bad';
  return 'warn';
}

// Events are drawn in batches, at most every 100 ms, and only the last
// MAX_EVENTS of a burst (a mass reconnect brings thousands at once).
let shown = [];
let drawTimer = null;

function drawEvents() {
  drawTimer = null;
  const evs = shown;
  shown = [];
  const list = $('events');
  const frag = document.createDocumentFragment();
  for (let i = evs.length - 1; i >= 0; i--) {
    const e = evs[i];
    frag.append(el('li', {dataset: {kind: e.kind}},
      el('time', null, fmtTime(e.time)), el('span', {className: 'badge ' + kindClass(e.kind)}, e.kind), ' ',
      e.targetId ? el('strong', null, e.targetId + ' ') : '', describe(e)));
  }
  list.prepend(frag);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function onEvent(e) {
  shown.push(e);
  if (shown.length > MAX_EVENTS) shown.shift();
  if (!drawTimer) drawTimer = setTimeout(drawEvents, 100);

  if (e.kind === 'primary_elected') {
    state.primaries.set(e.targetId, {connectorId: e.connectorId, channelId: e.channelId, epoch: e.epoch});
  } else if (e.kind === 'primary_evicted') {
    state.primaries.delete(e.targetId);
  }
  if (e.targetId === state.selected) renderPrimary();

  if (e.kind.startsWith('channel_') || e.kind.startsWith('primary_')) {
    touch('targets');
    if (e.targetId === state.selected) touch('channels');
  } else if (e.kind.startsWith('batch_')) {
    touch('batches');
    if (e.targetId === state.selected) touch('latency');
  } else if (e.kind.startsWith('node_') || e.kind === 'leader_changed') {
    touch('cluster');
  } else if (e.kind === 'dropped' || e.kind === 'state_restored') {
    touch(...ALL);
  }
}

function setLive(on) {
  const l = $('live');
  l.className = 'live ' + (on ? 'on' : 'off');
  l.textContent = on ? 'live' : 'reconnecting…';
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// follow reads the event stream for as long as this login lasts,
// reconnecting with a growing delay; every (re)connection refreshes
// everything, since events may have been missed meanwhile.
async function follow(gen) {
  let delay = 500;
  while (gen === state.gen) {
    try {
      const res = await fetch('/exchange/events', {headers: authHeaders({Accept: 'text/event-stream'}), cache: 'no-store'});
      if (res.status === 401) { needLogin(); return; }
      if (!res.ok) throw new ApiError(res.status, res.statusText);
      setLive(true);
      delay = 500;
      touch(...ALL); // events may have been missed while disconnected
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      while (gen === state.gen) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
          if (data) onEvent(JSON.parse(data));
        }
      }
      reader.cancel().catch(() => {});
    } catch (e) {
      // the controller is gone or restarting: retry below
    }
    if (gen !== state.gen) return;
    setLive(false);
    await sleep(delay);
    delay = Math.min(delay * 2, 10000);
  }
}

// ---- login -------------------------------------------------------------------

function needLogin() {
  state.gen++;
  setLive(false);
  $('live').textContent = 'token needed';
  $('login').hidden = false;
  $('token').focus();
}

async function login(ev) {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value);
  try {
    await api('/exchange/cluster');
  } catch (e) {
    $('login-error').textContent = e.status === 401 ? 'This token is not accepted.' : 'Error: ' + e.message;
    return;
  }
  $('login-error').textContent = '';
  $('token').value = '';
  $('login').hidden = true;
  $('logout').hidden = false;
  start();
}

function start() {
  const gen = ++state.gen;
  now(...ALL);
  follow(gen);
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', () => { sessionStorage.removeItem(TOKEN_KEY); needLogin(); });
  $('logout').hidden = !sessionStorage.getItem(TOKEN_KEY);
  $('send-form').addEventListener('submit', send);
  pager('targets', state.targets, 'targets');
  pager('channels', state.channels, 'channels');
  pager('batches', state.batches, 'batches');
  renderStatusTabs();
  start();
});
