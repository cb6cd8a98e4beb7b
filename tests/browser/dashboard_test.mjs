#!/usr/bin/env node
// The dashboard at / in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core;
// no browser is ever downloaded). Run by tests/integration/test_dashboard.py against a real host
// and agent (fake hub, fake engine):
//
//   node tests/browser/dashboard_test.mjs --url http://127.0.0.1:PORT --token TOKEN \
//        --screenshot OUT.png [--chromium /usr/bin/chromium] [--timeout-ms 30000] \
//        [--model tl] [--download-source hf://test-org/big-model --download-name big]
//
// The cluster must hold MODEL downloaded and not loaded, and DOWNLOAD_SOURCE must download slowly
// enough (seconds) for its progress to show. Midway the script prints {"await": "restart-host"}
// and waits for a line on stdin: the caller restarts the host meanwhile (same ports), then writes
// "go". Every step prints one JSON line ({"step", "ok", "ms"}); the last line is
// {"result": "pass" | "fail", ...}. Exit status 0 only when every step passed.

import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));

const { values: opts } = parseArgs({
  options: {
    url: { type: 'string' },
    token: { type: 'string', default: '' },
    screenshot: { type: 'string' },
    chromium: { type: 'string', default: process.env.GSWARM_CHROMIUM || '/usr/bin/chromium' },
    'timeout-ms': { type: 'string', default: '30000' },
    model: { type: 'string', default: 'tl' },
    'download-source': { type: 'string', default: 'hf://test-org/big-model' },
    'download-name': { type: 'string', default: 'big' },
    'no-restart': { type: 'boolean', default: false },
  },
});

function out(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

if (!opts.url || !opts.screenshot) {
  out({
    result: 'fail',
    error: 'usage: dashboard_test.mjs --url URL --token TOKEN --screenshot OUT.png',
  });
  process.exit(2);
}

let chromium;
try {
  ({ chromium } = await import(path.join(HERE, 'node_modules', 'playwright-core', 'index.mjs')));
} catch (e) {
  out({
    result: 'fail',
    error: `playwright-core is not installed (run npm ci in ${HERE}): ${e.message}`,
  });
  process.exit(2);
}

const BASE = opts.url.replace(/\/+$/, '');
const TIMEOUT = Number(opts['timeout-ms']);
const MODEL = opts.model;
const NEW_MODEL = opts['download-name'];
const started = Date.now();
const steps = [];
const timings = {};
const problems = []; // uncaught page errors and unexpected console errors

// ---- helpers --------------------------------------------------------------------------------

async function step(name, fn) {
  const t0 = Date.now();
  try {
    const detail = await fn();
    const ms = Date.now() - t0;
    steps.push({ step: name, ok: true, ms, ...(detail || {}) });
    out({ step: name, ok: true, ms, ...(detail || {}) });
  } catch (e) {
    const ms = Date.now() - t0;
    out({ step: name, ok: false, ms, error: e.message });
    e.step = name;
    throw e;
  }
}

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

// Polls `fn` (in Node) until it returns something truthy; fails naming `what` and the last
// value seen.
async function until(what, fn, timeout = TIMEOUT, interval = 50) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = `error: ${e.message}`;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeout} ms waiting for ${what} (last: ${JSON.stringify(last)})`,
      );
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

async function rest(method, p, body) {
  const headers = { Accept: 'application/json' };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(BASE + p, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : null };
}

const lines = readline.createInterface({ input: process.stdin });
const stdinLines = [];
const stdinWaiters = [];
lines.on('line', (line) => {
  const w = stdinWaiters.shift();
  if (w) w(line);
  else stdinLines.push(line);
});
function nextStdinLine(timeout) {
  if (stdinLines.length) return Promise.resolve(stdinLines.shift());
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no "go" on stdin within ${timeout} ms`)),
      timeout,
    );
    stdinWaiters.push((line) => {
      clearTimeout(timer);
      resolve(line);
    });
  });
}

// Records, in the page, every status a chip shows and every state of the connection indicator
// (the page re-renders on each change, so a MutationObserver sees each one).
function recorder() {
  window.__statusLog = [];
  window.__connLog = [];
  window.__percents = {};
  const record = () => {
    for (const chip of document.querySelectorAll('#models .chip')) {
      const { model, status } = chip.dataset;
      const mine = window.__statusLog.filter((e) => e.model === model);
      if (mine.length === 0 || mine[mine.length - 1].status !== status) {
        window.__statusLog.push({ model, status, t: Date.now() });
      }
    }
    for (const bar of document.querySelectorAll('#jobs .job .bar[data-percent]')) {
      const job = bar.closest('.job').dataset.model;
      const pct = bar.dataset.percent;
      if (pct === '') continue;
      window.__percents[job] = window.__percents[job] || [];
      if (!window.__percents[job].includes(pct)) window.__percents[job].push(pct);
    }
  };
  const conn = () => {
    const c = document.getElementById('conn').dataset.conn;
    const log = window.__connLog;
    if (log.length === 0 || log[log.length - 1].conn !== c) log.push({ conn: c, t: Date.now() });
  };
  document.addEventListener('DOMContentLoaded', () => {
    new MutationObserver(record).observe(document.body, {
      subtree: true,
      childList: true,
      attributes: true,
      attributeFilter: ['data-status', 'data-percent'],
    });
    new MutationObserver(conn).observe(document.getElementById('conn'), { attributes: true });
    conn();
  });
}

function watch(page, label) {
  page.on('pageerror', (e) => problems.push(`${label}: uncaught ${e.message}`));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // Refused calls (401 before the token, the host down while it restarts) are expected.
    if (/Failed to load resource|ERR_CONNECTION_REFUSED|net::ERR_/.test(m.text())) return;
    problems.push(`${label}: console error ${m.text()}`);
  });
}

const chip = (page, name) => page.locator(`#models .chip[data-model="${name}"]`);
const chipStatus = (page, name) =>
  chip(page, name)
    .getAttribute('data-status', { timeout: 1000 })
    .catch(() => null);

async function waitChip(page, name, status, timeout = TIMEOUT) {
  let seen = null;
  try {
    await until(
      `model ${name}'s chip to show ${status}`,
      async () => (seen = await chipStatus(page, name)) === status,
      timeout,
    );
  } catch (e) {
    throw new Error(`${e.message}; the chip shows ${seen === null ? 'nothing' : seen}`);
  }
}

async function dotColor(page, name) {
  // The page re-renders on every event: a dot read just as it is replaced is detached and has no
  // computed colour, so read it again.
  let color = null;
  await until(`model ${name}'s dot to have a colour`, async () => {
    color = await chip(page, name)
      .locator('.dot')
      .evaluate((el) => {
        const rgb = el.isConnected ? getComputedStyle(el).backgroundColor.match(/\d+/g) : null;
        if (!rgb) return null;
        const [r, g, b] = rgb.map(Number);
        if (r > 150 && g < 120 && b < 120) return 'red';
        if (g > 130 && r < 100) return 'green';
        if (r > 180 && g > 120 && b < 80) return 'amber';
        return `rgb(${r},${g},${b})`;
      })
      .catch(() => null);
    return color !== null;
  });
  return color;
}

async function panelStatus(page) {
  return (
    await page
      .locator('#panel-status .status-text')
      .textContent({ timeout: 1000 })
      .catch(() => '')
  ).trim();
}

// ---- the test -------------------------------------------------------------------------------

let browser;
let page;
let result;
try {
  browser = await chromium.launch({
    executablePath: opts.chromium,
    headless: true,
    args: ['--no-sandbox'],
  });
  timings.browser_launch_ms = Date.now() - started;

  // A tab without the token: the page asks for it; a wrong one is refused and asked for again.
  await step('token prompt', async () => {
    const context = await browser.newContext();
    const p = await context.newPage();
    watch(p, 'prompt tab');
    await p.goto(`${BASE}/`);
    await p.locator('#token-dialog[open]').waitFor({ timeout: TIMEOUT });
    await p.fill('#token-input', 'not-the-token');
    await p.click('#token-save');
    await until('the token prompt to come back after a wrong token', async () =>
      p.locator('#token-dialog[open]').isVisible(),
    );
    const message = await p.textContent('#token-message');
    await p.fill('#token-input', opts.token);
    await p.click('#token-save');
    await until(
      'the page to go live with the token',
      async () => (await p.getAttribute('#conn', 'data-conn')) === 'live',
    );
    await waitChip(p, MODEL, 'available');
    const cookies = await context.cookies();
    assert(cookies.length === 0, `the page set cookies: ${JSON.stringify(cookies)}`);
    await context.close();
    return { refused_message: message };
  });

  const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
  await context.addInitScript(recorder);
  page = await context.newPage();
  watch(page, 'main tab');
  const requests = [];
  page.on('request', (r) => requests.push({ t: Date.now(), url: r.url(), method: r.method() }));

  await step('token from ?token= then out of the URL', async () => {
    const t0 = Date.now();
    await page.goto(`${BASE}/?token=${encodeURIComponent(opts.token)}`);
    await until(
      'the page to go live',
      async () => (await page.getAttribute('#conn', 'data-conn')) === 'live',
    );
    assert(!page.url().includes('token='), `the token is still in the address bar: ${page.url()}`);
    const stored = await page.evaluate(() => sessionStorage.getItem('gswarm.token'));
    assert(stored === opts.token, 'the token is not in sessionStorage');
    timings.page_live_ms = Date.now() - t0;
  });

  await step('downloaded model listed with a red dot', async () => {
    const t0 = Date.now();
    await waitChip(page, MODEL, 'available');
    timings.first_chip_ms = Date.now() - t0;
    const color = await dotColor(page, MODEL);
    assert(color === 'red', `${MODEL}'s dot is ${color}, not red`);
    const text = await chip(page, MODEL).textContent();
    assert(/MiB|KiB|GiB/.test(text), `the chip shows no size: ${text}`);
    // The node card places it on node-a's disk.
    const disk = await page
      .locator('.node[data-node="node-a"] .tier-row[data-tier="disk"]')
      .textContent();
    assert(disk.includes(MODEL), `node-a's disk row does not list ${MODEL}: ${disk}`);
    return { chip: text.trim() };
  });

  await step('panel: Available (Not Loaded), on node-a disk', async () => {
    await chip(page, MODEL).click();
    await page.locator('#panel').waitFor({ state: 'visible' });
    await until(
      'the panel to say Available (Not Loaded)',
      async () => (await panelStatus(page)) === 'Available (Not Loaded)',
    );
    const where = await page.locator('#panel .where').textContent();
    assert(
      /Disk/.test(where) && where.includes('node-a'),
      `the panel does not place it on node-a's disk: ${where}`,
    );
    assert(await page.isEnabled('#load-button'), 'Load is disabled');
    assert(!(await page.isEnabled('#unload-button')), 'Unload is enabled with nothing loaded');
  });

  await step('Load turns the dot green (amber while loading)', async () => {
    const t0 = Date.now();
    await page.click('#load-button');
    await waitChip(page, MODEL, 'ready');
    timings.load_to_green_ms = Date.now() - t0;
    const color = await dotColor(page, MODEL);
    assert(color === 'green', `${MODEL}'s dot is ${color}, not green`);
    const log = (await page.evaluate(() => window.__statusLog))
      .filter((e) => e.model === MODEL)
      .map((e) => e.status);
    const sawLoading = log.lastIndexOf('loading');
    assert(
      sawLoading >= 0 && sawLoading < log.lastIndexOf('ready'),
      `no amber (loading) before green: ${log.join(' -> ')}`,
    );
    await until(
      'the panel to say Loaded & Ready',
      async () => (await panelStatus(page)) === 'Loaded & Ready',
    );
    const row = page.locator(`#instances tr[data-model="${MODEL}"][data-state="ready"]`);
    await row.waitFor({ timeout: TIMEOUT });
    const rowText = await row.textContent();
    assert(rowText.includes('node-a'), `the instance row names no node: ${rowText}`);
    const requestsCell = (await row.locator('[data-field="requests"]').textContent()).trim();
    const unloadCell = (await row.locator('[data-field="unload"]').textContent()).trim();
    assert(requestsCell === '0', `requests in flight: ${requestsCell}`);
    assert(
      unloadCell === 'manual',
      `a loaded (operator's) instance unloads "${unloadCell}", not manual`,
    );
    const gpuRow = await page
      .locator('.node[data-node="node-a"] .tier-row[data-tier="gpu"]')
      .textContent();
    assert(gpuRow.includes(MODEL), `node-a's GPU row does not list ${MODEL}: ${gpuRow}`);
    await until("the panel's events to show the instance ready", async () =>
      /-> ready/.test(await page.locator('#panel-log').textContent({ timeout: 1000 })),
    );
    // The engine's own log, read through GET /instances/ID/logs: the fake engine says where it
    // listens.
    await until("the panel to show the engine's log", async () =>
      /listening on/.test(await page.locator('#engine-log').textContent({ timeout: 1000 })),
    );
    return { statuses: log.join(' -> ') };
  });

  await step('Unload turns the dot red again', async () => {
    const t0 = Date.now();
    await page.click('#unload-button');
    await waitChip(page, MODEL, 'available');
    timings.unload_to_red_ms = Date.now() - t0;
    const color = await dotColor(page, MODEL);
    assert(color === 'red', `${MODEL}'s dot is ${color}, not red`);
    await until(
      'the panel to say Available (Not Loaded)',
      async () => (await panelStatus(page)) === 'Available (Not Loaded)',
    );
    await until(
      'the instance row to go',
      async () => (await page.locator(`#instances tr[data-model="${MODEL}"]`).count()) === 0,
    );
    await page.click('#panel-close');
  });

  await step('download form: progress, then the new chip', async () => {
    const t0 = Date.now();
    await page.fill('#download-source', opts['download-source']);
    await page.fill('#download-name', NEW_MODEL);
    await page.click('#download-button');
    await until('the download to be accepted', async () =>
      /Downloading/.test(await page.textContent('#download-result')),
    );
    const job = page.locator(`#jobs .job[data-model="${NEW_MODEL}"][data-kind="download"]`).first();
    await job.waitFor({ timeout: TIMEOUT });
    await until(
      `the download of ${NEW_MODEL} to succeed`,
      async () => (await job.getAttribute('data-state')) === 'succeeded',
      TIMEOUT * 2,
      100,
    );
    timings.download_ms = Date.now() - t0;
    const percents = ((await page.evaluate(() => window.__percents))[NEW_MODEL] || []).map(Number);
    const between = percents.filter((p) => p > 0 && p < 100);
    assert(between.length > 0, `no progress between 0 and 100% was shown: ${percents.join(', ')}`);
    await waitChip(page, NEW_MODEL, 'available');
    const color = await dotColor(page, NEW_MODEL);
    assert(color === 'red', `${NEW_MODEL}'s dot is ${color}, not red`);
    const log = (await page.evaluate(() => window.__statusLog))
      .filter((e) => e.model === NEW_MODEL)
      .map((e) => e.status);
    return {
      progress_shown: between.map((p) => `${p.toFixed(0)}%`).join(' '),
      statuses: log.join(' -> '),
    };
  });

  await step('text from the host is escaped', async () => {
    await page.fill('#download-source', 'hf://test-org/<img src=x onerror="window.__xss=1">');
    await page.fill('#download-name', 'xss-probe');
    await page.click('#download-button');
    await until('the refusal to show', async () =>
      /failed/.test(await page.textContent('#download-result')),
    );
    const shown = await page.textContent('#download-result');
    assert(shown.includes('<img src=x'), `the message was not shown as text: ${shown}`);
    assert((await page.locator('#download-result img').count()) === 0, 'the message became HTML');
    assert(!(await page.evaluate(() => window.__xss)), 'a script from the message ran');
  });

  await step('active model switch', async () => {
    await page.selectOption('#active-select', MODEL);
    await page.click('#switch-button');
    await until(
      `the active model to read ${MODEL}`,
      async () => (await page.textContent('#active-now')).trim() === MODEL,
    );
    const r = await rest('GET', '/v1/models');
    const active = (r.json.data || []).filter((m) => m.is_active).map((m) => m.id);
    assert(
      active.length === 1 && active[0] === MODEL,
      `GET /v1/models says the active model is ${active}`,
    );
  });

  if (!opts['no-restart']) {
    await step('reconnects after a host restart', async () => {
      const before = (await page.evaluate(() => window.__connLog)).length;
      out({ await: 'restart-host' });
      const line = await nextStdinLine(TIMEOUT * 2);
      assert(line.trim() === 'go', `expected "go" on stdin, got ${JSON.stringify(line)}`);
      const t0 = Date.now();
      await until('the page to reconnect', async () => {
        const log = (await page.evaluate(() => window.__connLog)).slice(before).map((e) => e.conn);
        return log.includes('reconnecting') && log[log.length - 1] === 'live';
      });
      timings.reconnect_after_restart_ms = Date.now() - t0;
      // Events flow on the new stream: a load shows amber, then green.
      await chip(page, MODEL).click();
      await until('Load to be enabled', async () => page.isEnabled('#load-button'));
      const t1 = Date.now();
      await page.click('#load-button');
      await waitChip(page, MODEL, 'ready');
      timings.load_to_green_after_restart_ms = Date.now() - t1;
      await until(
        'the panel to say Loaded & Ready',
        async () => (await panelStatus(page)) === 'Loaded & Ready',
      );
      const conn = (await page.evaluate(() => window.__connLog)).slice(before).map((e) => e.conn);
      return { connection: conn.join(' -> ') };
    });
  } else {
    await chip(page, MODEL).click();
    await page.click('#load-button');
    await waitChip(page, MODEL, 'ready');
  }

  await step('no polling while idle', async () => {
    await until(
      'no job to be running',
      async () => (await page.locator('#jobs .job.running').count()) === 0,
    );
    await page.waitForTimeout(1500); // a last progress refresh may still be due
    const from = Date.now();
    await page.waitForTimeout(3000);
    const calls = requests.filter((r) => r.t >= from).map((r) => `${r.method} ${r.url}`);
    assert(calls.length === 0, `the idle page made requests: ${calls.join(', ')}`);
    return { idle_window_ms: 3000 };
  });

  await step('screenshot', async () => {
    fs.mkdirSync(path.dirname(path.resolve(opts.screenshot)), { recursive: true });
    await page.screenshot({ path: opts.screenshot });
    const size = fs.statSync(opts.screenshot).size;
    return { path: path.resolve(opts.screenshot), bytes: size };
  });

  assert(problems.length === 0, `the page reported errors: ${problems.join(' | ')}`);
  result = {
    result: 'pass',
    steps: steps.map((s) => s.step),
    timings,
    total_ms: Date.now() - started,
    screenshot: path.resolve(opts.screenshot),
  };
} catch (e) {
  let failureShot = null;
  if (page) {
    failureShot = opts.screenshot.replace(/(\.png)?$/, '-failure.png');
    await page.screenshot({ path: failureShot, fullPage: true }).catch(() => {
      failureShot = null;
    });
  }
  result = {
    result: 'fail',
    step: e.step || null,
    error: e.message,
    problems,
    timings,
    failure_screenshot: failureShot,
  };
} finally {
  if (browser) await browser.close().catch(() => {});
  lines.close();
}
out(result);
process.exit(result.result === 'pass' ? 0 : 1);
