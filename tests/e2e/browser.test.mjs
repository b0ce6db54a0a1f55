// End-to-end sign-in through `pbxgate demo` in a real headless Chromium.
//
//   cd tests/e2e && npm ci && node --test browser.test.mjs
//
// Environment: see harness.mjs.

import test from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  ALICE, API_CLIENT_VARIANT, BOB, CAROL, GINA, SCREENSHOT_DIR, STEP_TIMEOUT_MS, TEST_TIMEOUT_MS,
  base, demoLog, expectAccountPicker, newPage, signInAs, useDemo, webclientIdentity, withDiagnostics,
} from './harness.mjs';

useDemo();

test('Alice signs in and lands on her extension', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  const alice = await newPage();
  const { page } = alice;
  await withDiagnostics({ alice }, async () => {
    await signInAs(page, ALICE);

    const me = await webclientIdentity(page);
    assert.equal(me.state, 'signed-in', `webclient state (shows "${me.text}")`);
    assert.equal(me.extension, '101');
    assert.match(me.text, /Alice Adams/);
    assert.match(me.text, /Extension 101/);
    assert.equal(page.url(), `${base}/`);
    // The signed-in webclient came over HTTP/2 (ALPN on pbxgate's TLS listener).
    assert.equal(
      await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol),
      'h2',
      'the webclient page is served over HTTP/2',
    );
    // Which credential opened the 3CX session (pbxgate logs the service extension's sign-in).
    assert.equal(
      /signed in to 3CX as the service extension/.test(demoLog),
      !API_CLIENT_VARIANT,
      `the 3CX session was opened through ${API_CLIENT_VARIANT ? 'the API client' : 'the service extension'}`,
    );

    const shot = path.join(SCREENSHOT_DIR, 'pbxgate-webclient.png');
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`screenshot of the signed-in webclient: ${shot}`);

    // The webclient's sign-out is a form posting to /auth/logout (a same-origin POST).
    await page.locator('form#logout button').click();
    await page.getByRole('heading', { name: 'You are signed out' }).waitFor();
    assert.ok(
      alice.events.some((e) => /^nav \d+ http:\/\/127\.0\.0\.1:\d+\/[^ ]*\/oauth2\/v2\.0\/logout\?/.test(e)),
      'sign-out went through the (simulated) Entra end-session endpoint',
    );
    assert.equal(new URL(page.url()).pathname, '/auth/signed-out');
    assert.equal(new URL(page.url()).origin, base);

    // The session really ended: / sends us to the account picker again.
    await page.goto(`${base}/`);
    await expectAccountPicker(page);
  });
  await alice.context.close();
});

test('a guest is refused with a clear page', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Gina is a guest: the user sync leaves guests out, and sign-in refuses them alike.
  const gina = await newPage();
  const { page, events } = gina;
  await withDiagnostics({ gina }, async () => {
    await signInAs(page, GINA);
    await page.getByRole('heading', { name: 'Guest accounts cannot use the web client' }).waitFor();
    const text = await page.locator('body').innerText();
    assert.ok(text.includes(GINA), `the page names ${GINA}`);
    const lastNav = events.filter((e) => e.startsWith('nav ')).at(-1);
    assert.match(lastNav ?? '', /^nav 403 /, 'the final document is served with HTTP 403');
  });
  await gina.context.close();
});

test('a new user gets an extension from the user sync when she signs in', { timeout: TEST_TIMEOUT_MS }, async () => {
  const carol = await newPage();
  const { page } = carol;
  await withDiagnostics({ carol }, async () => {
    await signInAs(page, CAROL);
    const me = page.locator('#me[data-state="signed-in"]');
    await me.waitFor({ timeout: STEP_TIMEOUT_MS });
    assert.equal(await me.getAttribute('data-extension'), '200', 'the first number from extension_start');
    assert.ok((await me.innerText()).includes('Carol Clark'));
  });
  await carol.context.close();
});

test("Bob's session is his own", { timeout: TEST_TIMEOUT_MS }, async () => {
  const bob = await newPage();
  const alice = await newPage();
  await withDiagnostics({ bob, alice }, async () => {
    await signInAs(bob.page, BOB);
    let me = await webclientIdentity(bob.page);
    assert.equal(me.state, 'signed-in', `webclient state (shows "${me.text}")`);
    assert.equal(me.extension, '102');
    assert.match(me.text, /Bob Baker/);
    assert.equal(bob.page.url(), `${base}/`);

    // Alice signing in elsewhere (another cookie jar) does not change who Bob is.
    await signInAs(alice.page, ALICE);
    me = await webclientIdentity(alice.page);
    assert.equal(me.extension, '101', `Alice's webclient (shows "${me.text}")`);

    await bob.page.reload();
    me = await webclientIdentity(bob.page);
    assert.equal(me.state, 'signed-in', `Bob after reload (shows "${me.text}")`);
    assert.equal(me.extension, '102');
    assert.match(me.text, /Bob Baker/);

    // Opening /auth/logout signs nobody out (any site could embed it): it shows a button.
    await bob.page.goto(`${base}/auth/logout`);
    await bob.page.getByRole('heading', { name: 'Sign out', exact: true }).waitFor();
    await bob.page.goto(`${base}/`);
    me = await webclientIdentity(bob.page);
    assert.equal(me.state, 'signed-in', `Bob after opening /auth/logout (shows "${me.text}")`);
    // The button posts the sign-out; the page's CSP lets the form and Entra's redirect through.
    await bob.page.goto(`${base}/auth/logout`);
    await bob.page.getByRole('button', { name: 'Sign out' }).click();
    await bob.page.getByRole('heading', { name: 'You are signed out' }).waitFor();
    assert.ok(
      bob.events.some((e) => /^nav \d+ http:\/\/127\.0\.0\.1:\d+\/[^ ]*\/oauth2\/v2\.0\/logout\?/.test(e)),
      'the sign-out went through the (simulated) Entra end-session endpoint',
    );
  });
  await bob.context.close();
  await alice.context.close();
});
