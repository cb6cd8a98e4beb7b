// The GSwarm dashboard: what is loaded where, live.
//
// Everything comes from the host's REST API; GET /events (Server-Sent Events, read with fetch()
// so that it can carry the Authorization header) says when something changed, and only what an
// event concerns is fetched again, debounced. The one timed refresh: GET /jobs once a second
// while a job is pending or running, because /events reports a job's state changes but not its
// progress. Every piece of text from the host goes into the page as text (never as HTML).
'use strict';

(() => {
  // ---- constants ---------------------------------------------------------------------------

  const TOKEN_KEY = 'gswarm.token';
  // The host's paths, relative to where the page is served (/ normally).
  const BASE = location.pathname.replace(/(dashboard\/)?[^/]*$/, '');
  const DEBOUNCE_MS = 120;
  const RECONNECT_MIN_MS = 250;
  const RECONNECT_MAX_MS = 5000;
  // The host writes a comment every 15 s on an idle stream: silence past this means it is gone.
  const STREAM_SILENCE_MS = 40000;
  const EVENTS_KEPT = 500;
  const EVENTS_SHOWN = 40;
  const MODEL_EVENTS_SHOWN = 12;
  const FINISHED_JOBS_SHOWN = 6;
  const ACTIVE_JOB = new Set(['pending', 'running']);
  const LOADING_INSTANCE = new Set(['planned', 'starting']);
  const UNLOADING_INSTANCE = new Set(['draining', 'stopping']);
  const ENDED_INSTANCE = new Set(['stopped', 'failed']);

  const state = {
    models: [],
    instances: [],
    jobs: [],
    nodes: [],
    routerModels: [],
    routerError: '',
    events: [],
    lastSeq: null,
    hostStartedAt: null,
    selected: null, // the model whose panel is open
    busy: new Map(), // model name -> "load" | "unload" while its request is in flight
    panelMessage: null, // {model, text, error, status}: a non-error one lasts while the status does
    loaded: false, // the first full refresh has come back
    engineLog: null, // {instance, text, error}: the open panel's engine log tail
  };

  const $ = (id) => document.getElementById(id);

  // ---- DOM helpers -------------------------------------------------------------------------

  // An element with properties and children; strings become text nodes (never parsed as HTML).
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key === 'style') Object.assign(el.style, value);
      else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
      else if (key === 'text') el.textContent = value;
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  // Replaces an element's children (strings as text; null and false left out).
  function put(el, ...children) {
    el.replaceChildren(
      ...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false),
    );
  }

  function dot(color, title) {
    return h('span', { class: `dot ${color}`, title: title || null, 'aria-hidden': 'true' });
  }

  // ---- formatting --------------------------------------------------------------------------

  // protobuf's JSON mapping writes 64-bit integers as strings.
  const num = (v) => (v === undefined || v === null || v === '' ? 0 : Number(v));

  function bytes(n) {
    n = num(n);
    if (n < 1024) return `${n} B`;
    const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let value = n / 1024;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return `${value.toFixed(1)} ${units[unit]}`;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return `${seconds}s`;
    const m = Math.floor(seconds / 60);
    if (m < 60) return `${m}m ${seconds % 60}s`;
    const hrs = Math.floor(m / 60);
    if (hrs < 48) return `${hrs}h ${m % 60}m`;
    return `${Math.floor(hrs / 24)}d ${hrs % 24}h`;
  }

  const timeOf = (ts) => (ts ? Date.parse(ts) : NaN);

  function clock(ts) {
    const t = timeOf(ts);
    if (Number.isNaN(t)) return '';
    return new Date(t).toLocaleTimeString([], { hour12: false });
  }

  function ago(ts) {
    const t = timeOf(ts);
    if (Number.isNaN(t)) return '';
    return `${duration((Date.now() - t) / 1000)} ago`;
  }

  function params(n) {
    n = num(n);
    if (!n) return '';
    if (n >= 1e9) return `${(n / 1e9).toFixed(1)}B params`;
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M params`;
    return `${n} params`;
  }

  // An instance's unload time as `gswarm ps` shows it: "in 4m 10s", "never" or "manual".
  function unloadText(inst) {
    if (!inst.managed_by) return 'manual';
    if (!inst.unload_at) return 'never';
    const left = (timeOf(inst.unload_at) - Date.now()) / 1000;
    return left > 0 ? `in ${duration(left)}` : 'now';
  }

  function percent(done, total) {
    total = num(total);
    if (total <= 0) return null;
    return Math.max(0, Math.min(100, (100 * num(done)) / total));
  }

  function levelOf(pct) {
    if (pct >= 90) return 'high';
    if (pct >= 70) return 'mid';
    return 'low';
  }

  // ---- the token ---------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  }

  // ?token=... is taken once into sessionStorage and removed from the address bar (and history).
  function takeTokenFromUrl() {
    const url = new URL(location.href);
    if (!url.searchParams.has('token')) return;
    const value = url.searchParams.get('token');
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    url.searchParams.delete('token');
    history.replaceState(history.state, '', url.pathname + url.search + url.hash);
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    return headers;
  }

  let tokenWaiters = [];

  function openTokenDialog(message) {
    const dialog = $('token-dialog');
    $('token-message').textContent = message;
    if (!dialog.open) {
      $('token-input').value = '';
      dialog.showModal();
      $('token-input').focus();
    }
  }

  // Opens the token prompt (once) and resolves when a token has been entered.
  function askForToken(message) {
    openTokenDialog(message);
    setConnection('token', 'token needed');
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }

  function onTokenEntered(event) {
    event.preventDefault();
    const value = $('token-input').value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('token-dialog').close();
    const waiters = tokenWaiters;
    tokenWaiters = [];
    for (const resolve of waiters) resolve();
    refreshAll();
  }

  // ---- REST --------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // The message of a REST error body: GSwarm's {"error": {"message"}} and OpenAI's alike.
  function errorMessage(body) {
    const err = body && typeof body === 'object' ? body.error : null;
    if (err && typeof err === 'object' && err.message) return String(err.message);
    if (typeof err === 'string') return err;
    return '';
  }

  async function api(method, path, body) {
    const init = {
      method,
      headers: authHeaders({ Accept: 'application/json' }),
      cache: 'no-store',
    };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    const response = await fetch(BASE + path, init);
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch (e) {
      json = null;
    }
    if (response.status === 401) {
      const message = errorMessage(json) || 'the host refused the token';
      askForToken(`${message}. Enter the host's token.`);
      throw new ApiError(401, message);
    }
    if (!response.ok) {
      throw new ApiError(
        response.status,
        errorMessage(json) || `${method} /${path}: HTTP ${response.status}`,
      );
    }
    return json;
  }

  // ---- refreshing, debounced ---------------------------------------------------------------

  const loaders = {
    models: async () => {
      state.models = (await api('GET', 'api/models')).models || [];
    },
    instances: async () => {
      state.instances = (await api('GET', 'serving')).instances || [];
    },
    jobs: async () => {
      state.jobs = (await api('GET', 'jobs')).jobs || [];
    },
    nodes: async () => {
      state.nodes = (await api('GET', 'nodes')).nodes || [];
    },
    router: async () => {
      try {
        state.routerModels = (await api('GET', 'v1/models')).data || [];
        state.routerError = '';
      } catch (e) {
        state.routerError = e.message;
        throw e;
      }
    },
  };
  const ALL = Object.keys(loaders);

  const wanted = new Set();
  let flushTimer = null;
  let flushing = false;

  // Fetches `what` (loader names; none: only re-render) soon, together with whatever else is
  // asked for meanwhile.
  function want(...what) {
    for (const w of what) wanted.add(w);
    if (flushTimer === null) flushTimer = setTimeout(flush, DEBOUNCE_MS);
  }

  function refreshAll() {
    want(...ALL);
  }

  async function flush() {
    flushTimer = null;
    if (flushing) {
      flushTimer = setTimeout(flush, DEBOUNCE_MS);
      return;
    }
    flushing = true;
    const what = [...wanted];
    wanted.clear();
    try {
      const results = await Promise.allSettled(what.map((w) => loaders[w]()));
      const failed = results.find((r) => r.status === 'rejected' && r.reason.status !== 401);
      if (what.includes('models')) state.loaded = true;
      if (failed) console.warn('refresh failed:', failed.reason.message);
    } finally {
      flushing = false;
    }
    render();
  }

  // ---- /events -----------------------------------------------------------------------------

  function setConnection(key, text) {
    const conn = $('conn');
    conn.dataset.conn = key;
    $('conn-text').textContent = text;
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // What an event concerns, and so what to fetch again.
  function onEvent(event) {
    state.lastSeq = event.seq;
    state.events.push(event);
    if (state.events.length > EVENTS_KEPT)
      state.events.splice(0, state.events.length - EVENTS_KEPT);
    switch (event.kind) {
      case 'node':
        want('nodes', 'models', 'instances');
        break;
      case 'job':
        // "progress" (at most once a second a running job) or a state change.
        want('jobs');
        if (!ACTIVE_JOB.has(event.to_state)) want('models', 'nodes');
        break;
      case 'replica':
        want('models', 'nodes');
        break;
      case 'instance':
        want('instances', 'models', 'nodes');
        if (state.engineLog && event.instance_id === state.engineLog.instance) {
          state.engineLog = null; // read again with the panel's next render
        }
        break;
      case 'router':
        want('router', 'instances');
        break;
      default:
        want();
    }
  }

  // Reads one Server-Sent Events response until it ends; returns how it ended.
  async function readStream(response, controller) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    let frame = { id: null, event: 'message', data: [] };
    let silence = null;
    const arm = () => {
      clearTimeout(silence);
      silence = setTimeout(() => controller.abort(), STREAM_SILENCE_MS);
    };
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return 'closed';
        arm();
        buffer += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, newline).replace(/\r$/, '');
          buffer = buffer.slice(newline + 1);
          if (line === '') {
            if (frame.data.length > 0 || frame.event !== 'message') {
              if (frame.event === 'end') return 'end';
              dispatch(frame);
            }
            frame = { id: null, event: 'message', data: [] };
            continue;
          }
          if (line.startsWith(':')) continue; // a keep-alive comment
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          let value = colon < 0 ? '' : line.slice(colon + 1);
          if (value.startsWith(' ')) value = value.slice(1);
          if (field === 'id') frame.id = value;
          else if (field === 'event') frame.event = value;
          else if (field === 'data') frame.data.push(value);
        }
      }
    } finally {
      clearTimeout(silence);
      reader.cancel().catch(() => {});
    }
  }

  function dispatch(frame) {
    let event;
    try {
      event = JSON.parse(frame.data.join('\n'));
    } catch (e) {
      return;
    }
    if (!event || typeof event !== 'object') return;
    if (!event.seq && frame.id) event.seq = frame.id;
    if (!event.kind) event.kind = frame.event;
    onEvent(event);
  }

  // Follows GET /events for as long as the page is open: resumes after the last event seen
  // (?since=), starts over when the host restarted (its sequence numbers start again at 1) or
  // no longer holds them, and refetches everything on every (re)connect.
  async function followEvents() {
    let delay = RECONNECT_MIN_MS;
    for (;;) {
      const controller = new AbortController();
      try {
        const health = await (await fetch(`${BASE}health`, { cache: 'no-store' })).json();
        const startedAt = Date.now() / 1000 - Number(health.uptime_s || 0);
        if (state.hostStartedAt !== null && Math.abs(startedAt - state.hostStartedAt) > 2) {
          state.lastSeq = null; // a new host run: its numbers mean other events
          state.events = [];
        }
        state.hostStartedAt = startedAt;
        if (health.auth_required && !token()) {
          await askForToken('This host needs its token.');
          continue;
        }
        const query = state.lastSeq
          ? `since=${encodeURIComponent(state.lastSeq)}`
          : `last=${EVENTS_KEPT}`;
        const response = await fetch(`${BASE}events?${query}`, {
          headers: authHeaders({ Accept: 'text/event-stream' }),
          cache: 'no-store',
          signal: controller.signal,
        });
        if (response.status === 401) {
          await askForToken("The host refused the token. Enter the host's token.");
          continue;
        }
        if (!response.ok) {
          if (state.lastSeq) {
            // The host no longer holds the events after ours: start from its newest.
            state.lastSeq = null;
            state.events = [];
            continue;
          }
          throw new Error(`GET /events: HTTP ${response.status}`);
        }
        setConnection('live', 'live');
        delay = RECONNECT_MIN_MS;
        refreshAll();
        await readStream(response, controller);
      } catch (e) {
        // The host is down or restarting: try again shortly.
      } finally {
        controller.abort(); // whatever of this response is left (a `continue` included)
      }
      setConnection('reconnecting', 'reconnecting…');
      await sleep(delay);
      delay = Math.min(delay * 2, RECONNECT_MAX_MS);
    }
  }

  // ---- what the page derives ---------------------------------------------------------------

  function instancesOf(name) {
    return state.instances.filter((i) => i.model_name === name);
  }

  function activeJobsOf(name) {
    return state.jobs.filter((j) => j.model_name === name && ACTIVE_JOB.has(j.state));
  }

  // A model's dot: green when an instance is ready; amber while one starts or stops, or while a
  // download, copy or serve of it runs; red otherwise.
  function statusOf(model) {
    // An instance on a node that went offline serves nobody.
    const insts = instancesOf(model.name).filter((i) => nodeState(i.node_id) !== 'offline');
    if (insts.some((i) => i.state === 'ready')) {
      return { key: 'ready', color: 'green', text: 'Loaded & Ready' };
    }
    if (insts.some((i) => LOADING_INSTANCE.has(i.state))) {
      return { key: 'loading', color: 'amber', text: 'Loading…' };
    }
    const job = activeJobsOf(model.name).find((j) =>
      ['download', 'copy', 'serve'].includes(j.kind),
    );
    if (job) {
      const text = { download: 'Downloading…', copy: 'Copying…', serve: 'Loading…' }[job.kind];
      return { key: job.kind === 'serve' ? 'loading' : 'copying', color: 'amber', text };
    }
    if (insts.some((i) => UNLOADING_INSTANCE.has(i.state))) {
      return { key: 'unloading', color: 'amber', text: 'Unloading…' };
    }
    if (model.state === 'offline' || !model.available) {
      return { key: 'offline', color: 'red', text: 'Offline' };
    }
    return { key: 'available', color: 'red', text: 'Available (Not Loaded)' };
  }

  function activeModel() {
    const active = state.routerModels.find((m) => m.is_active);
    return active ? active.id : '';
  }

  function nodeState(nodeId) {
    const node = state.nodes.find((n) => n.node_id === nodeId);
    return node ? node.state : 'unknown';
  }

  // ---- rendering ---------------------------------------------------------------------------

  function render() {
    renderSummary();
    renderModels();
    renderNodes();
    renderInstances();
    renderJobs();
    renderRouter();
    renderEvents();
    renderPanel();
    renderDownloadNodes();
  }

  function renderSummary() {
    const online = state.nodes.filter((n) => n.state === 'online').length;
    const ready = state.instances.filter((i) => i.state === 'ready').length;
    const running = state.jobs.filter((j) => ACTIVE_JOB.has(j.state)).length;
    put(
      $('summary'),
      h('span', {}, h('b', {}, `${online}/${state.nodes.length}`), ' nodes online'),
      h('span', {}, h('b', {}, String(state.models.length)), ' models'),
      h('span', {}, h('b', {}, String(ready)), ` instance${ready === 1 ? '' : 's'} ready`),
      h('span', {}, h('b', {}, String(running)), ` job${running === 1 ? '' : 's'} running`),
    );
  }

  function renderModels() {
    const box = $('models');
    if (state.models.length === 0) {
      put(
        box,
        h(
          'p',
          { class: 'empty' },
          state.loaded
            ? 'No models yet: download one (right), or run gswarm discover.'
            : 'Loading…',
        ),
      );
      return;
    }
    const models = [...state.models].sort((a, b) => a.name.localeCompare(b.name));
    put(
      box,
      ...models.map((model) => {
        const status = statusOf(model);
        const where = wherePlaced(model);
        return h(
          'button',
          {
            type: 'button',
            role: 'listitem',
            class: `chip${state.selected === model.name ? ' selected' : ''}`,
            dataset: { model: model.name, status: status.key },
            title: `${model.name}: ${status.text}`,
            'aria-label': `${model.name}, ${status.text}`,
            onclick: () => openPanel(model.name),
          },
          dot(status.color, status.text),
          h('span', { class: 'chip-name' }, model.name),
          activeModel() === model.name
            ? h(
                'span',
                {
                  class: 'chip-active',
                  title: 'the active model: requests for "default" go to it',
                },
                'active',
              )
            : null,
          h('span', { class: 'chip-size' }, sizeText(model)),
          where ? h('span', { class: 'chip-where' }, where) : null,
        );
      }),
    );
  }

  // Its size; while its first download runs, how far that is.
  function sizeText(model) {
    if (num(model.size_bytes) > 0) return bytes(model.size_bytes);
    const job = activeJobsOf(model.name).find((j) => j.kind === 'download');
    const pct = job ? percent(job.bytes_done, job.bytes_total) : null;
    return pct === null ? '' : `${pct.toFixed(0)}% downloaded`;
  }

  // Where a model is, in a few words: "GPU node-a", "DRAM node-a", "disk node-a +1".
  function wherePlaced(model) {
    const ready = instancesOf(model.name).filter((i) => i.state === 'ready');
    if (ready.length > 0)
      return `${ready[0].gpu_device === 'cpu' ? 'CPU' : 'GPU'} ${ready[0].node_id}${more(ready)}`;
    const replicas = (model.replicas || []).filter((r) => r.state === 'ready');
    const dram = replicas.filter((r) => r.tier === 'dram');
    if (dram.length > 0) return `DRAM ${dram[0].node_id}${more(dram)}`;
    if (replicas.length > 0) return `disk ${replicas[0].node_id}${more(replicas)}`;
    return '';
  }

  const more = (list) => (list.length > 1 ? ` +${list.length - 1}` : '');

  function bar(label, used, total, opts) {
    const o = opts || {};
    const pct = percent(used, total);
    const text = total > 0 ? `${bytes(used)} / ${bytes(total)}${o.suffix || ''}` : 'not reported';
    const fill = h('div', { class: `fill ${levelOf(pct || 0)}` });
    fill.style.width = `${pct || 0}%`;
    return h(
      'div',
      { class: 'meter', dataset: { meter: o.key || label } },
      h('span', { class: 'meter-label' }, label),
      h(
        'div',
        {
          class: 'bar',
          role: 'meter',
          'aria-label': label,
          'aria-valuemin': '0',
          'aria-valuemax': '100',
          'aria-valuenow': pct === null ? '0' : pct.toFixed(0),
        },
        fill,
      ),
      h('span', { class: 'meter-value' }, text),
    );
  }

  function renderNodes() {
    const box = $('nodes');
    if (state.nodes.length === 0) {
      put(
        box,
        h(
          'p',
          { class: 'empty' },
          state.loaded ? 'No node has connected: start gswarm client on each node.' : 'Loading…',
        ),
      );
      return;
    }
    put(
      box,
      ...state.nodes.map((node) => {
        const mem = node.memory || {};
        const online = node.state === 'online';
        const dramTotal = num(mem.dram_total_bytes || node.dram_total_bytes);
        const dramUsed = dramTotal > 0 ? dramTotal - num(mem.dram_available_bytes) : 0;
        const diskTotal = num(mem.disk_total_bytes);
        const bars = [
          bar('DRAM', dramUsed, dramTotal, { key: 'dram' }),
          bar('DRAM tier', num(mem.dram_tier_used_bytes), num(mem.dram_tier_budget_bytes), {
            key: 'dram-tier',
            suffix: ' budget',
          }),
          bar('Disk', diskTotal - num(mem.disk_free_bytes), diskTotal, { key: 'disk' }),
        ];
        for (const gpu of mem.gpus || node.gpus || []) {
          const budget = num(gpu.memory_budget_bytes) || num(gpu.memory_total_bytes);
          bars.push(
            bar(`GPU ${gpu.index}`, num(gpu.memory_used_bytes), budget, {
              key: `gpu${gpu.index}`,
              suffix: ` budget (${gpu.name || 'GPU'}, ${gpu.utilization_percent || 0}% busy)`,
            }),
          );
        }
        return h(
          'article',
          { class: `node ${online ? 'online' : 'offline'}`, dataset: { node: node.node_id } },
          h(
            'header',
            {},
            dot(online ? 'green' : 'red', node.state),
            h('h3', {}, node.node_id),
            h(
              'span',
              { class: 'muted' },
              [
                node.hostname,
                node.cpu_cores ? `${node.cpu_cores} cores` : '',
                (node.gpus || []).length ? `${node.gpus.length} GPU` : 'no GPU',
                node.version ? `v${node.version}` : '',
              ]
                .filter(Boolean)
                .join(' · '),
            ),
            online ? null : h('span', { class: 'badge red' }, node.state),
          ),
          online ? null : h('p', { class: 'muted small' }, node.state_reason || ''),
          h('div', { class: 'meters' }, bars),
          placedOn(node.node_id),
        );
      }),
    );
  }

  // What sits on one node, by tier: instances serving on its GPUs (or CPU), models in DRAM and on
  // disk.
  function placedOn(nodeId) {
    const rows = [];
    const insts = state.instances.filter(
      (i) => i.node_id === nodeId && !ENDED_INSTANCE.has(i.state),
    );
    rows.push(
      tierRow(
        'Serving',
        'gpu',
        insts.map((i) =>
          placed(
            i.model_name,
            i.state === 'ready' ? 'green' : 'amber',
            `${i.gpu_device || 'gpu'} · ${i.state}`,
          ),
        ),
      ),
    );
    for (const [label, tier] of [
      ['DRAM', 'dram'],
      ['Disk', 'disk'],
    ]) {
      const items = [];
      for (const model of state.models) {
        for (const r of model.replicas || []) {
          if (r.node_id !== nodeId || r.tier !== tier) continue;
          const ready = r.state === 'ready';
          const detail = ready
            ? r.pinned
              ? 'pinned'
              : ''
            : `${r.state}${r.progress ? ` ${Math.round(r.progress * 100)}%` : ''}`;
          items.push(placed(model.name, ready ? 'blue' : 'amber', detail));
        }
      }
      rows.push(tierRow(label, tier, items));
    }
    return h('div', { class: 'placed' }, rows);
  }

  function tierRow(label, key, items) {
    return h(
      'div',
      { class: 'tier-row', dataset: { tier: key } },
      h('span', { class: 'tier-label' }, label),
      items.length ? h('span', { class: 'tier-items' }, items) : h('span', { class: 'muted' }, '—'),
    );
  }

  function placed(name, color, detail) {
    return h(
      'span',
      { class: 'placed-item', dataset: { model: name } },
      dot(color),
      name,
      detail ? h('span', { class: 'muted' }, ` ${detail}`) : null,
    );
  }

  function renderInstances() {
    const box = $('instances');
    const insts = state.instances.filter(
      (i) =>
        !ENDED_INSTANCE.has(i.state) ||
        (i.state === 'failed' && Date.now() - timeOf(i.started_at) < 3600e3),
    );
    if (insts.length === 0) {
      put(
        box,
        h('p', { class: 'empty' }, 'No instance is running. Click a model above, then Load.'),
      );
      return;
    }
    const head = [
      'Model',
      'Instance',
      'Node',
      'Device',
      'State',
      'Endpoint',
      'Requests',
      'Unloads',
      'Load time',
      'Restarts',
      '',
    ];
    put(
      box,
      h(
        'table',
        { class: 'table' },
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            head.map((t) => h('th', { scope: 'col' }, t)),
          ),
        ),
        h(
          'tbody',
          {},
          insts.map((i) =>
            h(
              'tr',
              { dataset: { instance: i.id, model: i.model_name, state: i.state } },
              h('td', {}, h('b', {}, i.model_name)),
              h('td', { class: 'mono' }, i.id),
              h('td', {}, i.node_id),
              h('td', {}, i.gpu_device || ''),
              h(
                'td',
                {},
                dot(i.state === 'ready' ? 'green' : i.state === 'failed' ? 'red' : 'amber'),
                i.state,
                i.state_reason ? h('span', { class: 'muted' }, ` (${i.state_reason})`) : null,
              ),
              h('td', { class: 'mono' }, i.endpoint || ''),
              h(
                'td',
                { class: 'num', dataset: { field: 'requests' } },
                String(i.requests_in_flight || 0),
              ),
              h(
                'td',
                {
                  dataset: {
                    field: 'unload',
                    unloadAt: i.unload_at || '',
                    managedBy: i.managed_by || '',
                  },
                },
                unloadText(i),
              ),
              h(
                'td',
                { class: 'num' },
                num(i.load_time_ms) ? `${(num(i.load_time_ms) / 1000).toFixed(1)} s` : '',
              ),
              h('td', { class: 'num' }, String(i.restarts || 0)),
              h(
                'td',
                {},
                ENDED_INSTANCE.has(i.state)
                  ? null
                  : h(
                      'button',
                      {
                        type: 'button',
                        class: 'small',
                        onclick: (e) => stopInstance(e.currentTarget, i.id),
                      },
                      'Stop',
                    ),
              ),
            ),
          ),
        ),
      ),
    );
  }

  function renderJobs() {
    const box = $('jobs');
    const active = state.jobs.filter((j) => ACTIVE_JOB.has(j.state));
    const finished = state.jobs
      .filter((j) => !ACTIVE_JOB.has(j.state))
      .sort((a, b) => (timeOf(b.updated_at) || 0) - (timeOf(a.updated_at) || 0))
      .slice(0, FINISHED_JOBS_SHOWN);
    if (active.length + finished.length === 0) {
      put(box, h('p', { class: 'empty' }, 'No jobs yet.'));
      return;
    }
    put(box, ...[...active, ...finished].map(jobRow));
  }

  function jobRow(job) {
    const pct = percent(job.bytes_done, job.bytes_total);
    const running = ACTIVE_JOB.has(job.state);
    const color = { succeeded: 'green', failed: 'red', cancelled: 'grey' }[job.state] || 'amber';
    const parts = [];
    if (num(job.bytes_total) > 0)
      parts.push(`${bytes(job.bytes_done)} / ${bytes(job.bytes_total)}`);
    if (job.files_total) parts.push(`${job.files_done}/${job.files_total} files`);
    if (running && job.rate_bytes_per_s) parts.push(`${bytes(job.rate_bytes_per_s)}/s`);
    const fill = h('div', { class: `fill ${job.state === 'failed' ? 'high' : 'low'}` });
    fill.style.width = `${pct === null ? (job.state === 'succeeded' ? 100 : 0) : pct}%`;
    return h(
      'div',
      {
        class: `job ${running ? 'running' : 'done'}`,
        dataset: { job: job.id, model: job.model_name, kind: job.kind, state: job.state },
      },
      h(
        'div',
        { class: 'job-line' },
        dot(color, job.state),
        h('span', { class: 'badge' }, job.kind),
        h('b', {}, job.model_name || '—'),
        job.node_id ? h('span', { class: 'muted' }, `on ${job.node_id}`) : null,
        h('span', { class: 'job-state' }, job.state),
        h(
          'span',
          { class: 'muted job-time' },
          running ? ago(job.created_at) : clock(job.finished_at || job.updated_at),
        ),
        running
          ? h(
              'button',
              {
                type: 'button',
                class: 'small',
                onclick: (e) => cancelJob(e.currentTarget, job.id),
              },
              'Cancel',
            )
          : null,
      ),
      running || pct !== null
        ? h(
            'div',
            {
              class: 'bar',
              role: 'progressbar',
              'aria-valuemin': '0',
              'aria-valuemax': '100',
              'aria-valuenow': pct === null ? null : pct.toFixed(0),
              dataset: { percent: pct === null ? '' : pct.toFixed(1) },
            },
            fill,
          )
        : null,
      h(
        'div',
        { class: 'job-detail muted' },
        parts.join(' · '),
        pct !== null && running ? ` · ${pct.toFixed(0)}%` : '',
        job.message
          ? h(
              'span',
              { class: job.state === 'failed' ? 'error' : '' },
              `${parts.length ? ' — ' : ''}${job.message}`,
            )
          : null,
      ),
    );
  }

  function renderRouter() {
    const select = $('active-select');
    const previous = select.dataset.touched ? select.value : '';
    const active = state.routerModels.find((m) => m.is_active);
    $('active-now').textContent = active ? active.id : 'none';
    $('active-now').dataset.active = active ? active.id : '';
    const names = state.routerModels.map((m) => m.id).sort();
    put(select, ...names.map((name) => h('option', { value: name }, name)));
    if (previous && names.includes(previous)) select.value = previous;
    else if (active) select.value = active.id;
    $('switch-button').disabled = names.length === 0;
    $('switch-form').title = state.routerError
      ? `GET /v1/models failed: ${state.routerError}`
      : 'The model that requests for "default" (or naming no model) go to';
  }

  function eventItem(e) {
    return h(
      'li',
      { class: `event kind-${e.kind}`, dataset: { seq: String(e.seq), kind: e.kind } },
      h('span', { class: 'muted mono' }, clock(e.time)),
      h('span', { class: 'badge' }, e.kind),
      h('span', {}, e.message || `${e.action} ${e.model_name || e.node_id || ''}`),
    );
  }

  function renderEvents() {
    const shown = state.events.slice(-EVENTS_SHOWN).reverse();
    put(
      $('events'),
      ...(shown.length
        ? shown.map(eventItem)
        : [h('li', { class: 'empty' }, 'Nothing has happened yet.')]),
    );
  }

  function renderDownloadNodes() {
    const select = $('download-node');
    const current = select.value;
    const online = state.nodes.filter((n) => n.state === 'online').map((n) => n.node_id);
    put(
      select,
      h('option', { value: '' }, 'least loaded'),
      ...online.map((id) => h('option', { value: id }, id)),
    );
    if (online.includes(current)) select.value = current;
  }

  // ---- the model panel ---------------------------------------------------------------------

  function openPanel(name) {
    state.selected = name;
    if (state.panelMessage && state.panelMessage.model !== name) state.panelMessage = null;
    $('panel').hidden = false;
    render();
  }

  function closePanel() {
    state.selected = null;
    $('panel').hidden = true;
    render();
  }

  function renderPanel() {
    const panel = $('panel');
    if (!state.selected) {
      panel.hidden = true;
      return;
    }
    const model = state.models.find((m) => m.name === state.selected);
    const name = state.selected;
    panel.dataset.model = name;
    $('panel-title').textContent = name;
    if (!model) {
      panel.dataset.status = 'gone';
      put($('panel-body'), h('p', { class: 'empty' }, 'This model is no longer in the catalog.'));
      return;
    }
    const status = statusOf(model);
    panel.dataset.status = status.key;
    const insts = instancesOf(name);
    const live = insts.filter((i) => !ENDED_INSTANCE.has(i.state));
    const busy = state.busy.get(name);
    const md = model.metadata || {};

    const facts = [
      ['Size', bytes(model.size_bytes)],
      [
        'Format',
        [md.format, md.architecture, md.dtype, params(md.parameter_count)]
          .filter(Boolean)
          .join(' · '),
      ],
      ['Source', model.source_url],
      ['Commit', model.commit ? model.commit.slice(0, 12) : ''],
      [
        'Last load',
        num(model.load_time_ms) ? `${(num(model.load_time_ms) / 1000).toFixed(1)} s` : '',
      ],
    ].filter(([, v]) => v);

    const where = [];
    for (const i of live) {
      where.push(
        h(
          'li',
          { dataset: { tier: 'gpu', node: i.node_id, instance: i.id } },
          dot(i.state === 'ready' ? 'green' : 'amber'),
          h('b', {}, i.gpu_device === 'cpu' ? 'CPU' : (i.gpu_device || 'GPU').toUpperCase()),
          ` on ${i.node_id} — instance ${i.id}, ${i.state}`,
          i.endpoint ? `, ${i.endpoint}` : '',
          i.source_tier ? ` (from ${i.source_tier})` : '',
          `, ${i.requests_in_flight || 0} in flight, unloads `,
          h(
            'span',
            {
              dataset: {
                field: 'unload',
                unloadAt: i.unload_at || '',
                managedBy: i.managed_by || '',
              },
            },
            unloadText(i),
          ),
        ),
      );
    }
    for (const r of model.replicas || []) {
      const nstate = nodeState(r.node_id);
      where.push(
        h(
          'li',
          { dataset: { tier: r.tier, node: r.node_id } },
          dot(r.state !== 'ready' ? 'amber' : nstate === 'online' ? 'blue' : 'red'),
          h('b', {}, r.tier === 'dram' ? 'DRAM' : 'Disk'),
          ` on ${r.node_id}`,
          nstate === 'online' ? '' : ` (node ${nstate})`,
          r.state === 'ready'
            ? ''
            : ` — ${r.state}${r.progress ? ` ${Math.round(r.progress * 100)}%` : ''}`,
          r.pinned ? ' — pinned' : '',
          h('span', { class: 'muted mono small' }, ` ${r.path || ''}`),
        ),
      );
    }
    const failed = insts.filter((i) => i.state === 'failed').slice(-1)[0];

    const log = state.events.filter((e) => e.model_name === name).slice(-MODEL_EVENTS_SHOWN);
    let message =
      state.panelMessage && state.panelMessage.model === name ? state.panelMessage : null;
    if (message && !message.error) {
      if (message.status === undefined) message.status = status.key;
      else if (message.status !== status.key) message = state.panelMessage = null;
    }

    put(
      $('panel-body'),
      h(
        'p',
        {
          class: `status status-${status.color}`,
          id: 'panel-status',
          dataset: { status: status.key },
        },
        dot(status.color),
        h('span', { class: 'status-text' }, status.text),
      ),
      h(
        'div',
        { class: 'actions' },
        h(
          'button',
          {
            type: 'button',
            id: 'load-button',
            class: 'primary',
            disabled:
              !!busy || !model.can_load || status.key === 'ready' || status.key === 'loading',
            title: model.can_load ? null : 'No online node holds a copy of it',
            onclick: () => loadModel(name),
          },
          busy === 'load' ? 'Loading…' : 'Load',
        ),
        h(
          'button',
          {
            type: 'button',
            id: 'unload-button',
            disabled: !!busy || live.length === 0,
            onclick: () => unloadModel(name),
          },
          busy === 'unload' ? 'Unloading…' : 'Unload',
        ),
      ),
      message ? h('p', { class: message.error ? 'error' : 'result' }, message.text) : null,
      failed && status.key !== 'ready'
        ? h(
            'p',
            { class: 'error' },
            `Last instance ${failed.id} failed` +
              (failed.state_reason ? `: ${failed.state_reason}` : ''),
          )
        : null,
      h(
        'dl',
        { class: 'facts' },
        facts.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
      ),
      h('h3', {}, 'Where it is'),
      where.length ? h('ul', { class: 'where' }, where) : h('p', { class: 'empty' }, 'On no node.'),
      live[0] ? h('h3', {}, `Engine log (${live[0].id}, last lines)`) : null,
      live[0] ? engineLogView(live[0].id) : null,
      h('h3', {}, 'Recent events'),
      log.length
        ? h(
            'ol',
            { class: 'log mono', id: 'panel-log' },
            log.map((e) =>
              h(
                'li',
                {},
                h('span', { class: 'muted' }, `${clock(e.time)} `),
                e.message || `${e.kind} ${e.action}`,
              ),
            ),
          )
        : h('p', { class: 'empty' }, 'No events about it since the page opened.'),
    );
    const logList = $('panel-log');
    if (logList) logList.scrollTop = logList.scrollHeight; // the newest lines, as a tail shows them
  }

  // The tail of the instance's engine log (GET /instances/ID/logs), fetched when the panel shows
  // an instance and again when an instance event concerns its model.
  function engineLogView(id) {
    const log = state.engineLog;
    if (!log || log.instance !== id) {
      state.engineLog = { instance: id, text: null, error: '' };
      fetchEngineLog(id);
      return h('p', { class: 'empty' }, 'Reading the log…');
    }
    if (log.error) return h('p', { class: 'error' }, log.error);
    if (log.text === null) return h('p', { class: 'empty' }, 'Reading the log…');
    return h('pre', { class: 'log mono', id: 'engine-log' }, log.text || '(empty)');
  }

  async function fetchEngineLog(id) {
    let text = null;
    let error = '';
    try {
      const response = await fetch(`${BASE}instances/${encodeURIComponent(id)}/logs?tail=20`, {
        headers: authHeaders({}),
        cache: 'no-store',
      });
      const body = await response.text();
      if (response.ok) {
        text = body;
      } else {
        let json = null;
        try {
          json = JSON.parse(body);
        } catch (e) {
          json = null;
        }
        error = errorMessage(json) || `HTTP ${response.status}`;
      }
    } catch (e) {
      error = e.message;
    }
    if (state.engineLog && state.engineLog.instance === id) {
      state.engineLog = { instance: id, text, error };
      render();
    }
  }

  // ---- actions -----------------------------------------------------------------------------

  async function loadModel(name) {
    state.busy.set(name, 'load');
    state.panelMessage = null;
    render();
    try {
      const answer = await api('POST', `api/models/${encodeURIComponent(name)}/load`, {});
      const job = answer && answer.job;
      state.panelMessage = {
        model: name,
        text: job ? `Load requested: job ${job.id}.` : 'Load requested.',
      };
    } catch (e) {
      state.panelMessage = { model: name, text: `Load failed: ${e.message}`, error: true };
    } finally {
      state.busy.delete(name);
      want('instances', 'jobs', 'models');
    }
  }

  async function unloadModel(name) {
    state.busy.set(name, 'unload');
    state.panelMessage = null;
    render();
    try {
      const answer = await api('POST', `api/models/${encodeURIComponent(name)}/unload`, {});
      const stopped = (answer && answer.stopped) || [];
      state.panelMessage = {
        model: name,
        text: `Unloaded: ${stopped.map((i) => i.id).join(', ') || 'nothing was running'}.`,
      };
    } catch (e) {
      state.panelMessage = { model: name, text: `Unload failed: ${e.message}`, error: true };
    } finally {
      state.busy.delete(name);
      want('instances', 'jobs', 'models');
    }
  }

  async function stopInstance(button, id) {
    button.disabled = true;
    try {
      await api('DELETE', `instances/${encodeURIComponent(id)}`);
    } catch (e) {
      button.disabled = false;
      button.title = e.message;
      window.alert(`Stopping ${id} failed: ${e.message}`);
    }
    want('instances', 'models');
  }

  async function cancelJob(button, id) {
    button.disabled = true;
    try {
      await api('DELETE', `jobs/${encodeURIComponent(id)}`);
    } catch (e) {
      button.title = e.message;
    }
    want('jobs');
  }

  async function switchModel(event) {
    event.preventDefault();
    const model = $('active-select').value;
    if (!model) return;
    const button = $('switch-button');
    button.disabled = true;
    try {
      await api('POST', 'v1/models/switch', { model });
      delete $('active-select').dataset.touched;
    } catch (e) {
      window.alert(`Switching to ${model} failed: ${e.message}`);
    } finally {
      button.disabled = false;
      want('router');
    }
  }

  // The CLI's default name for a source: the repository (or file, or folder) name.
  function nameFromSource(source) {
    const trimmed = source.trim().replace(/\/+$/, '');
    const last = trimmed.split('/').pop() || '';
    return last.replace(/@.*$/, '').replace(/\.(gguf|safetensors|bin)$/i, '');
  }

  async function startDownload(event) {
    event.preventDefault();
    const source = $('download-source').value.trim();
    const name = $('download-name').value.trim() || nameFromSource(source);
    const result = $('download-result');
    result.className = 'result';
    if (!source || !name) {
      result.textContent = 'Give a source such as hf://org/repo.';
      result.className = 'error';
      return;
    }
    const body = {
      model_name: name,
      source_url: source,
      target_device: $('download-target').value,
    };
    if ($('download-node').value) body.node = $('download-node').value;
    const button = $('download-button');
    button.disabled = true;
    try {
      const answer = await api('POST', 'download', body);
      const job = answer && answer.job;
      const where = job ? ` (job ${job.id} on ${job.node_id || 'a node'})` : '';
      result.textContent = `Downloading ${name}${where}.`;
      result.dataset.job = job ? job.id : '';
      $('download-source').value = '';
      $('download-name').value = '';
    } catch (e) {
      result.textContent = `Download of ${name} failed: ${e.message}`;
      result.className = 'error';
    } finally {
      button.disabled = false;
      want('jobs', 'models');
    }
  }

  // Countdowns ("unloads in 4m 10s") tick without asking the host anything.
  function tick() {
    for (const cell of document.querySelectorAll('[data-field="unload"]')) {
      const text = unloadText({
        managed_by: cell.dataset.managedBy,
        unload_at: cell.dataset.unloadAt,
      });
      if (cell.textContent !== text) cell.textContent = text;
    }
  }

  // ---- start -------------------------------------------------------------------------------

  function start() {
    takeTokenFromUrl();
    $('token-form').addEventListener('submit', onTokenEntered);
    $('token-button').addEventListener('click', () => openTokenDialog("Enter the host's token."));
    $('panel-close').addEventListener('click', closePanel);
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && state.selected && !$('token-dialog').open) closePanel();
    });
    $('switch-form').addEventListener('submit', switchModel);
    $('active-select').addEventListener('change', (e) => {
      e.currentTarget.dataset.touched = '1';
    });
    $('download-form').addEventListener('submit', startDownload);
    $('download-source').addEventListener('input', () => {
      $('download-name').placeholder =
        nameFromSource($('download-source').value) || 'from the source';
    });
    setInterval(tick, 1000);
    render();
    followEvents();
  }

  start();
})();
