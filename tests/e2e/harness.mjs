// The shared harness of the browser tests: starts `pbxgate demo` on a free port, waits for it,
// launches headless Chromium, and gives each test fresh browser contexts with diagnostics.
// Test files call `useDemo()` once (it registers `before` and `after`).
//
// Environment:
//   PBXGATE_BIN             the pbxgate binary (default: ../../target/debug/pbxgate)
//   CHROMIUM_PATH           the browser (default: /usr/bin/chromium, Debian's `chromium` package)
//   PBXGATE_SCREENSHOT_DIR  where screenshots go (default: the OS temp dir)
//   PBXGATE__PBX__IMPERSONATION_CREDENTIAL
//                           unset: 3CX sessions by impersonation through the demo's service
//                           extension (999); `api-client`: the unverified API-client variant,
//                           which the demo then tells its simulated 3CX to accept

import { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const BIN = path.resolve(here, process.env.PBXGATE_BIN ?? '../../target/debug/pbxgate');
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const SCREENSHOT_DIR = process.env.PBXGATE_SCREENSHOT_DIR ?? os.tmpdir();
export const READY_TIMEOUT_MS = 60_000;
export const STEP_TIMEOUT_MS = 30_000; // per navigation / wait: CI is a 2-core machine
export const TEST_TIMEOUT_MS = 180_000;

export const ALICE = 'Alice.Adams@Contoso.com';
export const BOB = 'bob.baker@contoso.com';
export const CAROL = 'carol.clark@contoso.com';
export const GINA = 'gina@fabrikam.com';
export const API_CLIENT_VARIANT = process.env.PBXGATE__PBX__IMPERSONATION_CREDENTIAL === 'api-client';

let port;
export let base; // https://localhost:<port>
let demoDir;
let demo; // the pbxgate child process
let demoExit = null; // {code, signal} once it has exited
export let demoLog = '';
let browser;
const tempDirs = [];

const stripAnsi = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');
export const tail = (s, n = 6000) => (s.length > n ? '…' + s.slice(-n) : s);

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** One GET of /readyz trusting only the demo CA; resolves to the status code or null. */
function readyzStatus(ca) {
  return new Promise((resolve) => {
    const req = https.get(
      { host: 'localhost', port, path: '/readyz', ca, timeout: 5_000, agent: false },
      (res) => {
        res.resume();
        resolve(res.statusCode);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(null));
  });
}

async function waitForReady() {
  const caPath = path.join(demoDir, 'tls', 'ca.pem');
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = 'no answer yet';
  while (Date.now() < deadline) {
    if (demoExit) {
      throw new Error(
        `pbxgate demo exited early (code ${demoExit.code}, signal ${demoExit.signal}).\n` +
          `--- pbxgate output ---\n${tail(demoLog)}`,
      );
    }
    if (fs.existsSync(caPath)) {
      const status = await readyzStatus(fs.readFileSync(caPath));
      if (status === 200) return;
      last = status === null ? 'connection failed' : `HTTP ${status}`;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `pbxgate demo not ready at ${base}/readyz after ${READY_TIMEOUT_MS / 1000} s (last: ${last}).\n` +
      `--- pbxgate output ---\n${tail(demoLog)}`,
  );
}

/** Registers the demo's start (before the file's tests) and stop (after them). */
export function useDemo() {
  before(startDemo);
  after(stopDemo);
}

async function startDemo() {
  assert.ok(fs.existsSync(BIN), `pbxgate binary not found at ${BIN}; run \`cargo build\` or set PBXGATE_BIN`);
  assert.ok(fs.existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}; apt-get install chromium or set CHROMIUM_PATH`);

  port = await freePort();
  base = `https://localhost:${port}`;
  demoDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pbxgate-e2e-'));
  tempDirs.push(demoDir);

  demo = spawn(BIN, ['demo', '--listen', `127.0.0.1:${port}`, '--dir', demoDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1' },
  });
  const collect = (chunk) => {
    demoLog += stripAnsi(chunk.toString());
    if (demoLog.length > 200_000) demoLog = demoLog.slice(-100_000);
  };
  demo.stdout.on('data', collect);
  demo.stderr.on('data', collect);
  demo.on('exit', (code, signal) => (demoExit = { code, signal }));
  demo.on('error', (e) => {
    demoLog += `\n[spawn error] ${e.message}\n`;
    demoExit = { code: null, signal: null };
  });

  await waitForReady();

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: STEP_TIMEOUT_MS * 2,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

async function stopDemo() {
  await browser?.close().catch(() => {});
  if (demo && !demoExit) {
    const exited = new Promise((r) => demo.once('exit', r));
    demo.kill('SIGTERM');
    const timer = setTimeout(() => demo.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }
  for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
}

/** A fresh browser context (its own cookie jar) and page, recording what happened for diagnostics. */
export async function newPage() {
  // The demo's certificates come from a throw-away CA; trust nothing and ignore HTTPS errors.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  const events = [];
  page.on('response', (r) => {
    if (r.request().isNavigationRequest() && r.frame() === page.mainFrame()) {
      events.push(`nav ${r.status()} ${r.url()}`);
    } else if (r.status() >= 400) {
      events.push(`sub ${r.status()} ${r.request().method()} ${r.url()}`);
    }
  });
  page.on('requestfailed', (r) => events.push(`failed ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') events.push(`console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => events.push(`pageerror: ${e.message}`));
  return { context, page, events };
}

/** Runs a test body; on failure adds the page URL, page text, the navigation log and pbxgate's output. */
export async function withDiagnostics(pages, body) {
  try {
    await body();
  } catch (err) {
    let ctx = '';
    for (const [name, { page, events }] of Object.entries(pages)) {
      if (!page) continue;
      const text = await page
        .locator('body')
        .innerText({ timeout: 2_000 })
        .catch((e) => `(no page text: ${e.message.split('\n')[0]})`);
      ctx +=
        `\n--- ${name}: page URL ---\n${page.url()}` +
        `\n--- ${name}: page text ---\n${tail(text, 3000)}` +
        `\n--- ${name}: events ---\n${events.join('\n') || '(none)'}`;
    }
    ctx += `\n--- pbxgate output (tail) ---\n${tail(demoLog)}`;
    err.message += `\n${ctx}`;
    throw err;
  }
}

/** Asserts the simulated Entra account picker is showing. */
export async function expectAccountPicker(page) {
  await page.getByRole('heading', { name: 'Pick an account' }).waitFor();
  assert.equal(await page.title(), 'Sign in to your account');
  const upns = await page.locator('a.account').evaluateAll((as) => as.map((a) => a.dataset.upn));
  assert.deepEqual(upns.sort(), [ALICE, BOB, CAROL, GINA].sort(), 'demo users on the account picker');
}

/** From a fresh context: open /, pick `upn` on the account picker, wait to be back at the gateway. */
export async function signInAs(page, upn) {
  await page.goto(`${base}/`);
  await expectAccountPicker(page);
  await page.locator(`a.account[data-upn="${upn}"]`).click();
  await page.waitForURL((u) => u.origin === base);
  await page.waitForLoadState('load');
}

/** Waits for the webclient to settle (#me gets a data-state) and returns what it shows. */
export async function webclientIdentity(page) {
  const me = page.locator('#me[data-state]');
  await me.waitFor();
  return {
    state: await me.getAttribute('data-state'),
    extension: await me.getAttribute('data-extension'),
    text: await me.innerText(),
  };
}
