// masterjob dashboard: plain JavaScript, no dependencies, no build step.
//
// It reads the control API (api/mastercontrols and api/instances, relative
// to the page) and renders the locks, a page at a time, the instances and
// the history. It follows the API's event stream (api/mastercontrols/events,
// read with fetch so that it carries the bearer token) and reads again
// when an event arrives; while the stream is down it polls, and tries the
// stream again. Every piece of data goes into the page as text
// (textContent, attributes): lock names and reasons are user input and are
// never parsed as HTML.
'use strict';

(function () {
  const API = 'api/mastercontrols';
  const INSTANCES = 'api/instances';
  const TOKEN_KEY = 'masterjob.token';
  const HISTORY_LIMIT = 30;
  const PAGE_SIZE = 100;
  const REFRESH_MS = Math.max(250, Number(document.body.dataset.refreshMs) || 1000);
  // While the stream is up the page reads again on its events, and, for
  // the renewals (which are no events), every half lease, at most every
  // LIVE_REFRESH_MAX_MS and at least every REFRESH_MS.
  const LIVE_REFRESH_MAX_MS = 10000;
  const TICK_MS = 200;
  const EVENT_DEBOUNCE_MS = 50;

  const $ = (id) => document.getElementById(id);

  const state = {
    locks: [], // LockList.locks of the last answer
    fetchedAt: 0, // performance.now() when that answer arrived
    storeNow: 0, // the store's clock (ms since the epoch) at fetchedAt, estimated
    events: [],
    eventsKey: '', // what the rendered history shows, to skip needless redraws
    historyLock: '', // '' for every lock
    historyNote: 'Loading…',
    lastOK: 0, // performance.now() of the last successful refresh; 0: never
    inFlight: false,
    again: false, // refresh once more when the one in flight ends
    timer: 0,
    failure: null, // the error of the last refresh, if it failed
    summary: null, // LockList.summary of the last answer
    total: 0, // locks matching the filters
    filter: { match: '', state: '', instance: '' },
    after: '', // the page begins after this lock name ('' for the first)
    prevPages: [], // the "after" of the pages before this one
    nextAfter: '', // the "after" of the next page, '' on the last
    instances: null, // InstanceList.instances, null when unknown
    instancesNote: '',
    live: false, // the event stream is up
    lastEventId: '', // of the last event of the stream
    streamAbort: null, // aborts the stream
    streamFails: 0,
    eventTimer: 0,
  };

  // ---- DOM helpers -------------------------------------------------------

  // el creates an element. props are assigned as properties, except
  // "attrs" (set with setAttribute) and "on" (event listeners). Children
  // that are strings become text nodes.
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'attrs') {
        for (const [a, av] of Object.entries(v)) e.setAttribute(a, av);
      } else if (k === 'on') {
        for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      } else {
        e[k] = v;
      }
    }
    for (const c of children) {
      if (c !== null && c !== undefined && c !== false) e.append(c);
    }
    return e;
  }

  // INVISIBLE matches what would make a text display as another: format
  // characters (Cf: the bidirectional overrides and isolates such as
  // U+202E, zero-width characters), control characters other than tab and
  // line breaks, and the line and paragraph separators.
  const INVISIBLE = /[\p{Cf}\p{Zl}\p{Zp}\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/gu;

  // visible returns s with those characters written out, as [U+202E].
  function visible(s) {
    return String(s).replace(INVISIBLE, (c) => '[U+' + c.codePointAt(0).toString(16).toUpperCase().padStart(4, '0') + ']');
  }

  function setText(node, text) {
    const s = String(text);
    if (node.textContent !== s) node.textContent = s;
  }

  function badge(color, text) {
    return el('span', { className: 'badge ' + color }, text);
  }

  // ---- time --------------------------------------------------------------

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
    month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false,
  });

  function parseTime(iso) {
    const t = iso ? Date.parse(iso) : NaN;
    return Number.isNaN(t) ? null : t;
  }

  // when formats a store time for people: the time of day, with the date
  // when it is not today.
  function when(t) {
    const d = new Date(t);
    return d.toDateString() === new Date().toDateString() ? timeFmt.format(d) : dateTimeFmt.format(d);
  }

  function ago(ms) {
    const s = Math.max(0, ms) / 1000;
    if (s < 1) return 'just now';
    if (s < 60) return Math.floor(s) + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  function seconds(ms) {
    return ms < 10000 ? (ms / 1000).toFixed(1) + ' s' : Math.round(ms / 1000) + ' s';
  }

  // storeNow estimates the store's clock now, from the last answer.
  function storeNow() {
    return state.storeNow + (performance.now() - state.fetchedAt);
  }

  // ---- token -------------------------------------------------------------

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch {
      return '';
    }
  }

  function setToken(t) {
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // Storage refused (private mode): the token lasts until reload.
    }
    memoryToken = t;
    showToken();
  }

  let memoryToken = token();

  function currentToken() {
    return token() || memoryToken;
  }

  function showToken() {
    const has = currentToken() !== '';
    $('token').placeholder = has ? 'saved for this tab' : 'not set';
    $('token-clear').hidden = !has;
  }

  // ---- API ---------------------------------------------------------------

  class APIError extends Error {
    constructor(status, message, field) {
      super(message);
      this.status = status;
      this.field = field || '';
    }
  }

  // api sends a request to the control API: a GET, or a POST of body as
  // JSON. It resolves to {data, date} or rejects with an APIError (status 0
  // when the server could not be reached).
  async function api(path, body) {
    const headers = { Accept: 'application/json' };
    const t = currentToken();
    if (t) headers.Authorization = 'Bearer ' + t;
    const init = { headers, cache: 'no-store', credentials: 'same-origin' };
    if (body !== undefined) {
      init.method = 'POST';
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res, text;
    try {
      res = await fetch(path, init);
      text = await res.text();
    } catch {
      throw new APIError(0, 'the server cannot be reached');
    }
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const msg = data && typeof data.error === 'string' ? data.error : (res.status + ' ' + res.statusText).trim();
      throw new APIError(res.status, msg, data && data.field);
    }
    return { data, date: res.headers.get('Date') };
  }

  function describe(err) {
    switch (err.status) {
      case 0:
        return ['Server unreachable.', 'The dashboard cannot reach its server. Retrying…'];
      case 401:
        return currentToken()
          ? ['Token refused.', 'The server did not accept the bearer token (401). Check it and save it again.']
          : ['Token required.', 'The server requires a bearer token (401). Enter it in the field at the top right.'];
      case 403:
        return ['Forbidden.', 'The server refused the request (403): ' + err.message];
      case 503:
        return ['Store unavailable.', 'The control API cannot reach the store (503): ' + err.message];
      default:
        return [err.status > 0 ? 'Error ' + err.status + '.' : 'Error.', err.message];
    }
  }

  // ---- refresh -----------------------------------------------------------

  function refreshSoon() {
    if (state.inFlight) {
      state.again = true;
      return;
    }
    refresh();
  }

  function listPath() {
    const q = new URLSearchParams();
    q.set('limit', String(PAGE_SIZE));
    if (state.after) q.set('after', state.after);
    for (const k of ['match', 'state', 'instance']) {
      if (state.filter[k]) q.set(k, state.filter[k]);
    }
    return API + '?' + q.toString();
  }

  async function refresh() {
    state.inFlight = true;
    clearTimeout(state.timer);
    const histLock = state.historyLock;
    const histPath = API + '/history?limit=' + HISTORY_LIMIT + (histLock ? '&lockName=' + encodeURIComponent(histLock) : '');
    const listKey = listPath();
    try {
      const [locks, hist, insts] = await Promise.allSettled([api(listKey), api(histPath), api(INSTANCES)]);
      if (locks.status === 'rejected') throw locks.reason;
      if (listKey === listPath()) applyLocks(locks.value);
      if (histLock === state.historyLock) {
        if (hist.status === 'fulfilled') {
          state.events = (hist.value.data && hist.value.data.events) || [];
          state.historyNote = '';
        } else if (hist.reason.status === 501) {
          state.events = [];
          state.historyNote = 'This store keeps no history.';
        } else {
          state.historyNote = 'History unavailable: ' + describe(hist.reason)[1];
        }
        renderHistory();
      }
      if (insts.status === 'fulfilled') {
        state.instances = (insts.value.data && insts.value.data.instances) || [];
        state.instancesNote = '';
      } else if (insts.reason.status === 501) {
        state.instances = null;
        state.instancesNote = 'This store keeps no member list: instances do not announce themselves in it.';
      } else {
        state.instancesNote = 'Instances unavailable: ' + describe(insts.reason)[1];
      }
      renderInstances();
      state.lastOK = performance.now();
      state.failure = null;
      showStatus();
    } catch (err) {
      state.failure = err instanceof APIError ? err : new APIError(-1, String(err));
      showStatus();
    } finally {
      state.inFlight = false;
      if (state.again) {
        state.again = false;
        refresh();
      } else {
        state.timer = setTimeout(refresh, nextRefreshMs());
      }
    }
  }

  // nextRefreshMs is when to read again without an event: at the refresh
  // interval while polling; while the stream is up, every half of the
  // shortest lease shown, within [REFRESH_MS, LIVE_REFRESH_MAX_MS].
  function nextRefreshMs() {
    if (!state.live || state.failure) return REFRESH_MS;
    let ms = LIVE_REFRESH_MAX_MS;
    for (const l of state.locks) {
      const renewed = parseTime(l.lastRenewal), expires = parseTime(l.expiresAt);
      if (l.master && renewed !== null && expires !== null && expires > renewed) ms = Math.min(ms, (expires - renewed) / 2);
    }
    return Math.max(REFRESH_MS, ms);
  }

  function applyLocks({ data, date }) {
    const locks = (data && Array.isArray(data.locks)) ? data.locks : [];
    state.locks = locks;
    state.summary = (data && data.summary) || null;
    state.total = data && typeof data.total === 'number' ? data.total : locks.length;
    state.nextAfter = (data && data.nextAfter) || '';
    state.fetchedAt = performance.now();
    // The store's clock when it answered: a held lock's expiresAt minus its
    // expiresInMs; else the response's Date; else the browser's clock.
    let now = null;
    for (const l of locks) {
      const exp = parseTime(l.expiresAt);
      if (l.master && exp !== null) {
        now = exp - l.expiresInMs;
        break;
      }
    }
    if (now === null) now = parseTime(date);
    if (now === null) now = Date.now();
    state.storeNow = now;
    renderLocks();
  }

  // showStatus shows the connection state, the banner and the token hint.
  function showStatus() {
    const conn = $('conn');
    const banner = $('banner');
    const err = state.failure;
    $('token-form').classList.toggle('needs', !!err && err.status === 401);
    if (!err) {
      conn.dataset.state = 'live';
      conn.dataset.mode = state.live ? 'stream' : 'polling';
      setText($('conn-text'), state.live ? 'Live' : 'Live (polling)');
      conn.title = state.live ? 'Following the event stream' : 'The event stream is not available: reading every ' + seconds(REFRESH_MS);
      banner.hidden = true;
      return;
    }
    const [title, detail] = describe(err);
    conn.dataset.state = err.status === 401 ? 'auth' : 'error';
    setText($('conn-text'), err.status === 401 ? 'Token needed' : err.status === 503 ? 'Store unavailable' : 'Offline');
    banner.dataset.kind = err.status === 401 ? 'auth' : 'error';
    const stale = state.lastOK ? ' The data below is from ' + ago(performance.now() - state.lastOK) + '.' : '';
    banner.replaceChildren(el('strong', null, title), ' ' + visible(detail) + stale);
    banner.hidden = false;
  }

  // ---- locks -------------------------------------------------------------

  const rows = new Map(); // lock name -> row

  function renderLocks() {
    const locks = state.locks;
    const sum = state.summary || { locks: locks.length, withMaster: 0, noMaster: 0, disabled: 0, masters: [] };
    setText($('sum-locks'), sum.locks);
    setText($('sum-held'), sum.withMaster);
    setText($('sum-free'), sum.noMaster);
    setText($('sum-disabled'), sum.disabled);
    $('card-nostandby').hidden = typeof sum.noStandby !== 'number';
    setText($('sum-nostandby'), typeof sum.noStandby === 'number' ? sum.noStandby : '–');
    renderInstanceFilter(sum.masters || []);
    renderPager();

    const body = $('locks-body');
    const seen = new Set();
    let prev = null;
    for (const l of locks) {
      seen.add(l.lockName);
      let row = rows.get(l.lockName);
      if (!row) {
        row = newRow(l.lockName);
        rows.set(l.lockName, row);
      }
      row.update(l);
      const want = prev ? prev.nextSibling : body.firstChild;
      if (want !== row.tr) body.insertBefore(row.tr, want);
      prev = row.tr;
    }
    for (const [name, row] of rows) {
      if (!seen.has(name)) {
        row.tr.remove();
        rows.delete(name);
      }
    }
    const filtered = state.filter.match || state.filter.state || state.filter.instance;
    setText($('locks-empty'), filtered && sum.locks > 0 ? 'No lock matches.' : 'No locks yet. A lock appears once an instance follows it or an operator disables it.');
    $('locks-empty').hidden = locks.length > 0;
    tick();
    if (!state.rendered) {
      // For measurements: when the first answer was on the screen.
      state.rendered = true;
      performance.mark('masterjob:first-render');
    }
  }

  // renderPager shows where this page is among the locks that match.
  function renderPager() {
    const pager = $('pager');
    const first = state.prevPages.length * PAGE_SIZE;
    pager.hidden = state.total <= PAGE_SIZE && state.prevPages.length === 0;
    setText($('page-text'), state.total === 0 ? '' :
      (first + 1) + '–' + (first + state.locks.length) + ' of ' + state.total);
    $('page-prev').disabled = state.prevPages.length === 0;
    $('page-first').disabled = state.prevPages.length === 0;
    $('page-next').disabled = !state.nextAfter;
    const filtered = state.filter.match || state.filter.state || state.filter.instance;
    setText($('f-count'), filtered ? state.total + (state.total === 1 ? ' lock matches' : ' locks match') : '');
  }

  // renderInstanceFilter lists the masters in the instance filter, keeping
  // the one chosen.
  function renderInstanceFilter(masters) {
    const sel = $('f-instance');
    const ids = masters.map((m) => m.instance);
    if (state.filter.instance && !ids.includes(state.filter.instance)) ids.push(state.filter.instance);
    const key = ids.join('\u0000');
    if (sel.dataset.key === key) return;
    sel.dataset.key = key;
    const opts = [el('option', { value: '' }, 'Every master')];
    for (const id of ids) {
      const m = masters.find((x) => x.instance === id);
      opts.push(el('option', { value: id }, visible(id) + (m && m.host ? ' (' + visible(m.host) + ')' : '')));
    }
    sel.replaceChildren(...opts);
    sel.value = state.filter.instance;
  }

  function setFilter(k, v) {
    if (state.filter[k] === v) return;
    state.filter[k] = v;
    state.after = '';
    state.prevPages = [];
    refreshSoon();
  }

  let matchTimer = 0;
  $('f-match').addEventListener('input', () => {
    clearTimeout(matchTimer);
    matchTimer = setTimeout(() => setFilter('match', $('f-match').value.trim()), 250);
  });
  $('f-state').addEventListener('change', () => setFilter('state', $('f-state').value));
  $('f-instance').addEventListener('change', () => setFilter('instance', $('f-instance').value));
  $('filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    clearTimeout(matchTimer);
    setFilter('match', $('f-match').value.trim());
  });
  $('page-next').addEventListener('click', () => {
    if (!state.nextAfter) return;
    state.prevPages.push(state.after);
    state.after = state.nextAfter;
    refreshSoon();
  });
  $('page-prev').addEventListener('click', () => {
    if (state.prevPages.length === 0) return;
    state.after = state.prevPages.pop();
    refreshSoon();
  });
  $('page-first').addEventListener('click', () => {
    state.prevPages = [];
    state.after = '';
    refreshSoon();
  });

  // ---- instances ---------------------------------------------------------

  function renderInstances() {
    setText($('instances-note'), state.instancesNote);
    const body = $('instances-body');
    const list = state.instances;
    if (list === null) {
      body.replaceChildren();
      return;
    }
    const counts = new Map(((state.summary && state.summary.masters) || []).map((m) => [m.instance, m.count]));
    const key = JSON.stringify([list.map((i) => [i.id, i.host, i.masters, i.lockCount, i.weight, i.address, i.started]), [...counts]]);
    if (body.dataset.key === key) {
      for (const tr of body.children) {
        const i = list.find((x) => x.id === tr.dataset.instance);
        if (i) setText(tr.querySelector('.seen'), ago(Date.now() - (parseTime(i.lastSeen) || Date.now())));
      }
      return;
    }
    body.dataset.key = key;
    body.replaceChildren(...list.map((i) => {
      const started = parseTime(i.started), seen = parseTime(i.lastSeen);
      // Masterships as the locks say (exact), else as the instance last
      // announced.
      const n = counts.has(i.id) ? counts.get(i.id) : (state.summary ? 0 : i.masters);
      const tr = el('tr', null,
        el('td', { className: 'instance' }, visible(i.id)),
        el('td', null, visible(i.host || i.info || '')),
        el('td', { className: 'num masterships' }, String(n)),
        el('td', { className: 'num' }, String(i.lockCount)),
        el('td', { className: 'num' }, String(i.weight)),
        el('td', { className: 'mono' }, visible(i.address || '')),
        el('td', { title: started !== null ? new Date(started).toISOString() : '' }, started !== null ? when(started) : ''),
        el('td', { className: 'seen', title: seen !== null ? new Date(seen).toISOString() : '' }, seen !== null ? ago(Date.now() - seen) : ''));
      tr.dataset.instance = i.id;
      return tr;
    }));
  }

  // newRow creates the row of one lock; its cells are updated in place on
  // every refresh, so that buttons keep their identity and focus.
  function newRow(name) {
    const nameBtn = el('button', {
      type: 'button', className: 'lock-name', textContent: visible(name), title: 'Show the history of this lock',
      attrs: { 'aria-pressed': 'false' },
      on: { click: () => setHistoryLock(state.historyLock === name ? '' : name) },
    });
    const stateCell = el('td', { className: 'state' });
    const masterCell = el('td', { className: 'master' });
    const standbyCell = el('td', { className: 'num standbys' });
    const tokenCell = el('td', { className: 'num token-cell' });
    const leaseText = el('span', { className: 'lease-text' });
    const leaseBar = el('span');
    const leaseBarWrap = el('div', { className: 'bar' }, leaseBar);
    const leaseSub = el('span', { className: 'sub' });
    const leaseCell = el('td', { className: 'lease' }, leaseText, leaseBarWrap, leaseSub);
    const renewCell = el('td', { className: 'renewal' });
    const controlCell = el('td', { className: 'control' });
    const action = el('button', { type: 'button', className: 'btn btn-small' });
    action.addEventListener('click', () => openDialog(action.dataset.action, name));
    const handoff = el('button', { type: 'button', className: 'btn btn-small btn-ghost btn-handoff', textContent: 'Hand off', hidden: true });
    handoff.title = 'Move the mastership of ' + visible(name) + ' to another instance, without disabling it';
    handoff.addEventListener('click', () => openDialog('handoff', name));
    const tr = el('tr', null,
      el('td', { className: 'lock' }, nameBtn),
      stateCell, masterCell, standbyCell, tokenCell, leaseCell, renewCell, controlCell,
      el('td', { className: 'actions' }, handoff, action));
    tr.dataset.lock = name;

    let lock = null;
    let lastKey = '';

    function update(l) {
      lock = l;
      nameBtn.setAttribute('aria-pressed', String(state.historyLock === l.lockName));
      const held = !!l.master;
      tr.dataset.state = held ? (l.revoked || l.disabled ? 'stopping' : 'master') : (l.disabled ? 'disabled' : 'free');
      tr.dataset.disabled = String(!!l.disabled);
      tr.dataset.master = l.master || '';

      // Cells that change only with the lock's state are rebuilt only then.
      tr.dataset.standbys = typeof l.standbys === 'number' ? String(l.standbys) : '';
      const key = JSON.stringify([l.master, l.holder, l.holderInfo, l.token, l.since, l.revoked, l.disabled, l.reason, l.changedBy, l.changedAt,
        l.standbys, l.handoffRequested, l.handoffTo, l.reservedFor]);
      if (key !== lastKey) {
        lastKey = key;
        stateCell.replaceChildren(stateBadge(l));
        masterCell.replaceChildren(...masterContent(l));
        tokenCell.replaceChildren(l.token ? el('span', { className: held ? 'mono strong' : 'mono none' }, String(l.token)) : el('span', { className: 'none' }, '—'));
        controlCell.replaceChildren(...controlContent(l));
        standbyCell.replaceChildren(...standbyContent(l));
        // Without a member list (no standby count) the store cannot say
        // who could take over: no hand-off from the page.
        handoff.hidden = !held || l.disabled || l.revoked || typeof l.standbys !== 'number';
        action.dataset.action = l.disabled ? 'enable' : 'disable';
        action.textContent = l.disabled ? 'Enable' : 'Disable';
        action.className = 'btn btn-small ' + (l.disabled ? 'btn-success btn-enable' : 'btn-danger btn-disable');
        action.title = (l.disabled ? 'Enable ' : 'Disable ') + visible(l.lockName);
      }
      tickRow();
    }

    // tickRow updates what moves with time: the countdown and "ago" texts.
    function tickRow() {
      if (!lock) return;
      const l = lock;
      const elapsed = performance.now() - state.fetchedAt;
      if (l.master) {
        const left = Math.max(0, l.expiresInMs - elapsed);
        const renewed = parseTime(l.lastRenewal), expires = parseTime(l.expiresAt);
        const total = renewed !== null && expires !== null && expires > renewed ? expires - renewed : 0;
        setText(leaseText, left > 0 ? seconds(left) + ' left' : 'expiring…');
        leaseBarWrap.hidden = total === 0;
        const pct = total ? Math.min(100, (left / total) * 100) : 0;
        leaseBar.style.width = pct.toFixed(1) + '%';
        leaseBarWrap.classList.toggle('low', pct < 34);
        setText(leaseSub, total ? 'lease ' + seconds(total) : '');
        leaseText.classList.remove('none');
      } else {
        setText(leaseText, '—');
        leaseText.classList.add('none');
        leaseBarWrap.hidden = true;
        setText(leaseSub, '');
      }
      const renewed = parseTime(l.lastRenewal);
      if (l.master && renewed !== null) {
        const text = ago(storeNow() - renewed);
        if (renewCell.textContent !== text) {
          renewCell.replaceChildren(el('span', null, text), el('span', { className: 'sub' }, when(renewed)));
        }
        renewCell.title = new Date(renewed).toISOString();
      } else if (renewCell.textContent !== '—') {
        renewCell.replaceChildren(el('span', { className: 'none' }, '—'));
        renewCell.title = '';
      }
    }

    return { tr, update, tick: tickRow };
  }

  function stateBadge(l) {
    if (l.master && (l.revoked || l.disabled)) return badge('amber', 'Stopping');
    if (l.master) return badge('green', 'Master');
    if (l.disabled) return badge('gray', 'Stopped');
    return badge('red', 'No master');
  }

  function masterContent(l) {
    if (!l.master) {
      if (l.reservedFor) return [el('span', { className: 'sub' }, 'handed to ' + visible(l.reservedFor))];
      return [el('span', { className: 'none' }, '—')];
    }
    const who = [], where = [];
    if (l.holder) {
      if (l.holder.host) who.push(visible(l.holder.host));
      if (l.holder.pid) who.push('pid ' + l.holder.pid);
      if (l.holder.version) who.push('v' + visible(l.holder.version).replace(/^v/, ''));
      if (l.holder.address) where.push(visible(l.holder.address));
    } else if (l.holderInfo) {
      who.push(visible(l.holderInfo));
    }
    const since = parseTime(l.since);
    if (since !== null) where.push('since ' + when(since));
    return [
      el('span', { className: 'instance', title: 'Instance id' }, visible(l.master)),
      who.length ? el('span', { className: 'sub' }, who.join(' · ')) : null,
      where.length ? el('span', { className: 'sub' }, where.join(' · ')) : null,
      l.handoffRequested ? el('span', { className: 'sub handing' }, 'handing off to ' + (l.handoffTo ? visible(l.handoffTo) : 'another instance') + '…') : null,
    ].filter((c) => c !== null);
  }

  function standbyContent(l) {
    if (typeof l.standbys !== 'number') return [el('span', { className: 'none', title: 'This store keeps no member list' }, '—')];
    if (l.standbys === 0 && !l.disabled) {
      const b = badge('amber', 'None');
      b.classList.add('no-standby');
      b.title = 'No live instance other than the master takes part in this lock: nobody could take over';
      return [b];
    }
    return [el('span', { className: 'mono' }, String(l.standbys))];
  }

  function controlContent(l) {
    const out = [l.disabled ? badge('gray', 'Disabled') : badge('blue', 'Enabled')];
    if (l.disabled && l.reason) out.push(el('span', { className: 'sub reason' }, '“' + visible(l.reason) + '”'));
    const changed = parseTime(l.changedAt);
    if (l.changedBy || changed !== null) {
      const by = [];
      if (l.changedBy) by.push('by ' + visible(l.changedBy));
      if (changed !== null) by.push(when(changed));
      out.push(el('span', { className: 'sub', title: changed !== null ? new Date(changed).toISOString() : '' }, by.join(' · ')));
    }
    return out;
  }

  function tick() {
    for (const row of rows.values()) row.tick();
    if (state.lastOK) {
      setText($('updated'), 'Updated ' + ago(performance.now() - state.lastOK) + (state.failure ? ' (stale)' : ''));
    }
  }

  // ---- history -----------------------------------------------------------

  const KIND_COLORS = {
    acquired: 'green', enabled: 'green', released: 'blue', disabled: 'gray', demoted: 'amber', lost: 'red',
    takeover: 'amber', handoff: 'blue', joined: 'green', left: 'gray',
  };

  function setHistoryLock(name) {
    state.historyLock = name;
    state.events = [];
    state.eventsKey = '';
    state.historyNote = 'Loading…';
    for (const [n, row] of rows) row.tr.querySelector('.lock-name').setAttribute('aria-pressed', String(n === name));
    renderHistory();
    refreshSoon();
  }

  $('history-all').addEventListener('click', () => setHistoryLock(''));

  function renderHistory() {
    const filter = $('history-filter');
    filter.hidden = !state.historyLock;
    setText($('history-lock'), visible(state.historyLock));
    setText($('history-note'), state.historyNote);
    const events = state.events;
    $('history-empty').hidden = events.length > 0 || state.historyNote !== '';
    const key = state.historyLock + '\u0000' + events.map((e) => e.id).join(',');
    if (key === state.eventsKey) return;
    state.eventsKey = key;
    const body = $('history-body');
    body.replaceChildren(...events.map((e) => {
      const at = parseTime(e.at);
      return el('tr', { attrs: { 'data-kind': String(e.kind) } },
        el('td', { className: 'time', title: at !== null ? new Date(at).toISOString() : '' }, at !== null ? when(at) : ''),
        el('td', null, el('button', {
          type: 'button', className: 'lock-name', textContent: visible(e.lockName),
          on: { click: () => setHistoryLock(String(e.lockName)) },
        })),
        el('td', null, badge(KIND_COLORS[e.kind] || 'gray', visible(e.kind))),
        el('td', { className: 'instance' }, visible(e.instance || '')),
        el('td', { className: 'num mono' }, e.token ? String(e.token) : '—'),
        el('td', { className: 'reason' }, visible(e.reason || '')),
        el('td', { className: 'mono' }, visible(e.remote || '')));
    }));
  }

  // ---- disable / enable --------------------------------------------------

  const dialog = $('confirm');
  let pending = null; // {action, lock} of the open dialog

  function openDialog(action, lock) {
    const disable = action === 'disable', handoff = action === 'handoff';
    pending = { action, lock };
    const title = handoff ? 'Hand off ' : disable ? 'Disable ' : 'Enable ';
    setText($('confirm-title'), title + visible(lock) + '?');
    setText($('confirm-text'), handoff
      ? 'Its master stops the job, then releases the lock to the instance chosen; the lock stays enabled.'
      : disable
        ? 'Its master stops the job within one heartbeat, and no instance takes the lock until it is enabled again.'
        : 'One instance becomes master and starts the job.');
    setText($('confirm-label'), disable ? 'Reason (kept in the history)' : 'Note (optional, kept in the history)');
    const input = $('confirm-reason');
    input.value = '';
    input.placeholder = disable ? 'e.g. maintenance of the billing database' : '';
    const to = $('confirm-to');
    to.hidden = !handoff;
    $('confirm-to-label').hidden = !handoff;
    to.replaceChildren(el('option', { value: '' }, 'Any other instance'));
    const ok = $('confirm-ok');
    ok.textContent = handoff ? 'Hand off' : disable ? 'Disable' : 'Enable';
    ok.className = 'btn ' + (handoff ? '' : disable ? 'btn-danger' : 'btn-success');
    ok.disabled = false;
    formError('');
    dialog.showModal();
    if (handoff) {
      loadCandidates(lock);
      to.focus();
    } else {
      input.focus();
    }
  }

  // loadCandidates fills the hand-off target list with the live instances
  // taking part in lock, its master left out.
  async function loadCandidates(lock) {
    const to = $('confirm-to');
    try {
      const { data } = await api(API + '/locks/' + encodeURIComponent(lock).replace(/\./g, '%2E'));
      if (!pending || pending.lock !== lock || pending.action !== 'handoff') return;
      const cands = ((data && data.candidates) || []).filter((id) => id !== data.master);
      const byId = new Map((state.instances || []).map((i) => [i.id, i]));
      for (const id of cands) {
        const i = byId.get(id);
        to.append(el('option', { value: id }, visible(id) + (i && i.host ? ' (' + visible(i.host) + ')' : '')));
      }
      to.dataset.loaded = String(cands.length);
      if (data && Array.isArray(data.candidates) && cands.length === 0) {
        formError('No other live instance takes part in this lock: there is nobody to hand it to.');
      }
    } catch (err) {
      to.dataset.loaded = 'error';
    }
  }

  function formError(text) {
    const p = $('confirm-error');
    setText(p, visible(text));
    p.hidden = text === '';
  }

  $('confirm-cancel').addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => { pending = null; });

  $('confirm-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!pending) return;
    const { action, lock } = pending;
    const reason = $('confirm-reason').value.trim();
    const target = action === 'handoff' ? $('confirm-to').value : '';
    if (action === 'disable' && reason === '') {
      formError('Give a reason: it is recorded in the history for whoever looks next.');
      $('confirm-reason').focus();
      return;
    }
    const ok = $('confirm-ok');
    ok.disabled = true;
    try {
      const body = { lockName: lock };
      if (target) body.to = target;
      if (reason) body.reason = reason;
      const { data } = await api(API + '/' + action, body);
      dialog.close();
      toast((data && data.message) || 'Done.', data && data.warning ? 'error' : '');
      refreshSoon();
    } catch (err) {
      ok.disabled = false;
      const [title, detail] = describe(err);
      formError(title + ' ' + detail);
      if (err.status === 401) $('token-form').classList.add('needs');
    }
  });

  let toastTimer = 0;
  function toast(text, kind) {
    const t = $('toast');
    setText(t, visible(text));
    t.dataset.kind = kind || '';
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 6000);
  }

  // ---- token form --------------------------------------------------------

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('token');
    const t = input.value.trim();
    input.value = '';
    if (t) {
      setToken(t);
      toast('Token saved for this browser tab.');
      restartStream();
    }
    refreshSoon();
  });

  $('token-clear').addEventListener('click', () => {
    setToken('');
    toast('Token forgotten.');
    restartStream();
    refreshSoon();
  });

  // ---- event stream ------------------------------------------------------

  // onEvent reads again soon after an event, once for a burst of them.
  function onEvent() {
    if (state.eventTimer) return;
    state.eventTimer = setTimeout(() => {
      state.eventTimer = 0;
      refreshSoon();
    }, EVENT_DEBOUNCE_MS);
  }

  function setLive(live) {
    if (state.live === live) return;
    state.live = live;
    document.body.dataset.live = live ? 'stream' : 'polling';
    showStatus();
    if (!live) refreshSoon(); // polling from now on
  }

  function restartStream() {
    if (state.streamAbort) state.streamAbort.abort();
    if (state.streamWake) state.streamWake();
  }

  // dispatch handles one event of the stream.
  function dispatch(ev) {
    if (ev.id !== null) state.lastEventId = ev.id;
    switch (ev.type) {
      case 'ready':
        state.streamFails = 0;
        setLive(true);
        refreshSoon();
        break;
      case '':
      case 'message':
      case 'member':
      case 'gap':
        state.liveEvents = (state.liveEvents || 0) + 1;
        document.body.dataset.liveEvents = String(state.liveEvents);
        onEvent();
        break;
    }
  }

  // readStream reads one connection of the stream until it ends.
  async function readStream(signal) {
    const headers = { Accept: 'text/event-stream' };
    const t = currentToken();
    if (t) headers.Authorization = 'Bearer ' + t;
    if (state.lastEventId) headers['Last-Event-ID'] = state.lastEventId;
    const res = await fetch(API + '/events', { headers, cache: 'no-store', credentials: 'same-origin', signal });
    if (!res.ok || !res.body) throw new APIError(res.status, 'event stream refused');
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    let ev = { id: null, type: '', data: '' };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        let line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (ev.data !== '' || ev.type !== '') dispatch(ev);
          ev = { id: null, type: '', data: '' };
          continue;
        }
        if (line[0] === ':') continue;
        const c = line.indexOf(':');
        const k = c < 0 ? line : line.slice(0, c);
        let v = c < 0 ? '' : line.slice(c + 1);
        if (v[0] === ' ') v = v.slice(1);
        if (k === 'data') ev.data += (ev.data ? '\n' : '') + v;
        else if (k === 'event') ev.type = v;
        else if (k === 'id') ev.id = v;
      }
    }
  }

  // streamLoop keeps the stream open, falling back to polling while it is
  // down and trying again with a growing pause.
  async function streamLoop() {
    for (;;) {
      const ctrl = new AbortController();
      state.streamAbort = ctrl;
      try {
        await readStream(ctrl.signal);
      } catch (err) {
        // Refused, unreachable or aborted: polling carries on.
      }
      setLive(false);
      state.streamFails++;
      const wait = ctrl.signal.aborted ? 0 : Math.min(30000, 1000 * 2 ** Math.min(state.streamFails - 1, 5));
      await new Promise((r) => {
        state.streamWake = r;
        setTimeout(r, wait);
      });
      state.streamWake = null;
    }
  }

  // ---- start -------------------------------------------------------------

  document.body.dataset.live = 'polling';
  showToken();
  renderHistory();
  refresh();
  streamLoop();
  setInterval(tick, TICK_MS);
})();
