// The admin console (`/admin`) through `pbxgate demo` in a real headless Chromium: Alice (in
// the demo's admin group) signs in, sees the overview, runs a dry run and sees its table,
// adds an override, and signs Bob out from the sessions page (Bob's browser is signed out);
// Bob, no admin, gets 403; a form posted from another site is refused. Screenshots of every
// console page at 1280 px and on a phone go to tests/e2e/artifacts/ (gitignored).
//
//   cd tests/e2e && npm ci && node --test admin.test.mjs

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ALICE, BOB, TEST_TIMEOUT_MS, base, expectAccountPicker, newPage, signInAs, useDemo, withDiagnostics,
} from './harness.mjs';

useDemo();

const here = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = process.env.PBXGATE_ARTIFACTS_DIR ?? path.join(here, 'artifacts');
const VIEWPORTS = { desktop: { width: 1280, height: 900 }, phone: { width: 390, height: 844 } };
const PAGES = ['overview', 'sync', 'directory', 'sessions', 'audit'];

/** Screenshots of the page now open, at both widths; returns their paths. */
async function shoot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const shots = [];
  for (const [label, size] of Object.entries(VIEWPORTS)) {
    await page.setViewportSize(size);
    const file = path.join(ARTIFACTS, `admin-${name}-${label}.png`);
    await page.screenshot({ path: file, fullPage: true });
    shots.push(file);
  }
  await page.setViewportSize(VIEWPORTS.desktop);
  return shots;
}

/** The page at `path` must be served with `status` (the last main-frame navigation). */
async function expectStatus(events, status) {
  const last = events.filter((e) => e.startsWith('nav ')).at(-1) ?? '';
  assert.match(last, new RegExp(`^nav ${status} `), `expected HTTP ${status}, got: ${last}`);
}

/** Another site: serves a page whose form posts to the console with Alice's real token. */
function attackerSite(token) {
  const html =
    `<!doctype html><form method="post" action="${base}/admin/check">` +
    `<input type="hidden" name="csrf" value="${token}"><button type="submit">Win a prize</button></form>`;
  const server = http.createServer((_, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(html);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

test('an admin runs the console; others are kept out', { timeout: TEST_TIMEOUT_MS * 2 }, async (t) => {
  const alice = await newPage();
  const bob = await newPage();
  const shots = [];
  await withDiagnostics({ alice, bob }, async () => {
    await alice.page.setViewportSize(VIEWPORTS.desktop);
    await signInAs(alice.page, ALICE);
    await signInAs(bob.page, BOB);

    // Overview first: the users sync of the demo runs 30 s after start, and the dry run
    // below should still find Carol, Dora and Emil without an extension.
    await alice.page.goto(`${base}/admin`);
    await alice.page.getByRole('heading', { name: 'Overview', level: 1 }).waitFor();
    await alice.page.getByRole('heading', { name: 'Installation status' }).waitFor();

    await alice.page.goto(`${base}/admin/sync`);
    await alice.page.locator('section#users button', { hasText: 'Dry run' }).click();
    const plan = alice.page.locator('#plan table.plan');
    await plan.waitFor();
    const rows = await plan.locator('tbody tr').allInnerTexts();
    assert.ok(rows.length > 0, 'the plan has rows');
    assert.ok(rows.some((r) => /^create/.test(r)), `a create in the plan: ${rows.join(' | ')}`);
    shots.push(...(await shoot(alice.page, 'sync-dry-run')));

    await alice.page.goto(`${base}/admin/directory`);
    const form = alice.page.locator('form[action="/admin/directory/overrides"]');
    await form.locator('input[name="upn"]').fill('dora.diaz@contoso.com');
    await form.locator('input[name="extension"]').fill('103');
    await form.locator('button').click();
    await alice.page.getByRole('status').filter({ hasText: 'The override was saved.' }).waitFor();
    const overrides = await alice.page.locator('table.overrides').innerText();
    assert.match(overrides, /dora\.diaz@contoso\.com\s+103/);

    // Bob is signed in; Alice ends his session from the sessions page.
    await alice.page.goto(`${base}/admin/sessions`);
    const bobRow = alice.page.locator('table.sessions tr', { hasText: BOB }).first();
    await bobRow.locator('button', { hasText: 'Sign out everywhere' }).click();
    await alice.page.getByRole('status').filter({ hasText: 'Every session of the user was ended' }).waitFor();
    await bob.page.goto(`${base}/`);
    await expectAccountPicker(bob.page);

    // Bob is no admin: 403, in a page of its own.
    await signInAs(bob.page, BOB);
    await bob.page.goto(`${base}/admin`);
    await bob.page.getByRole('heading', { name: 'Admins only' }).waitFor();
    await expectStatus(bob.events, 403);
    shots.push(...(await shoot(bob.page, 'forbidden')));

    // A page on another site posts a form to the console with Alice's real token: refused.
    await alice.page.goto(`${base}/admin`);
    const token = await alice.page.locator('input[name="csrf"]').first().inputValue();
    const site = await attackerSite(token);
    try {
      await alice.page.goto(`http://127.0.0.1:${site.address().port}/`);
      await alice.page.getByRole('button', { name: 'Win a prize' }).click();
      await alice.page.getByRole('heading', { name: 'Request refused' }).waitFor();
      await expectStatus(alice.events, 403);
    } finally {
      site.close();
    }

    // Every page, at both widths; the audit log lists what Alice did.
    for (const name of PAGES) {
      await alice.page.goto(`${base}/admin${name === 'overview' ? '' : `/${name}`}`);
      await alice.page.locator('main h1').waitFor();
      shots.push(...(await shoot(alice.page, name)));
    }
    const audit = await alice.page.locator('main table').innerText();
    for (const action of ['sync.dry_run', 'override.add', 'session.revoke_user']) {
      assert.ok(audit.includes(action), `the audit log lists ${action}`);
    }
    assert.ok(!audit.includes('doctor.check'), 'the refused cross-site POST did nothing');
  });
  for (const s of shots) t.diagnostic(`screenshot: ${s}`);
  await alice.context.close();
  await bob.context.close();
});
