// Self-check for oidc-provider.mjs: spawns it, runs discovery + authorization code flow with
// PKCE S256 and automatic sign-in (login_hint), validates the ID Token, then RP-initiated logout.
// Node built-ins only. Usage: node tests/e2e/smoke.mjs   (exit 0 = pass)

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { strict as assert } from 'node:assert';

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const CLIENT_ID = '11111111-2222-4333-8444-555555555555';
const CLIENT_SECRET = 'smoke-secret~with.special_chars-123';
const REDIRECT_URI = 'http://127.0.0.1:1/auth/callback'; // never contacted: we stop at the Location
const POST_LOGOUT_URI = 'http://127.0.0.1:1/logged-out';

const b64url = (buf) => Buffer.from(buf).toString('base64url');
const decodeJwtPart = (part) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
const log = (...a) => console.log('smoke:', ...a);

// --- spawn the provider and read its single readiness line -----------------------------------
const child = spawn(process.execPath, [
  fileURLToPath(new URL('./oidc-provider.mjs', import.meta.url)),
  '--tenant', TENANT,
  '--client-id', CLIENT_ID,
  '--client-secret', CLIENT_SECRET,
  '--redirect-uri', REDIRECT_URI,
  '--post-logout-redirect-uri', POST_LOGOUT_URI,
  '--port', '0',
], { stdio: ['ignore', 'pipe', 'pipe'] });
let stderr = '';
child.stderr.on('data', (d) => { stderr += d; });
const stdoutLines = [];
const lines = createInterface({ input: child.stdout });
lines.on('line', (l) => stdoutLines.push(l));

async function readyLine() {
  const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
  try {
    while (stdoutLines.length === 0) {
      if (child.exitCode !== null) throw new Error(`provider exited early (${child.exitCode})`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return JSON.parse(stdoutLines[0]);
  } finally {
    clearTimeout(timer);
  }
}

// --- tiny cookie jar (name -> value; path/expiry ignored, good enough for a single host) -----
const jar = new Map();
function storeCookies(res) {
  for (const sc of res.headers.getSetCookie()) {
    const [pair, ...attrs] = sc.split(';');
    const i = pair.indexOf('=');
    const name = pair.slice(0, i).trim();
    const value = pair.slice(i + 1).trim();
    const expired = attrs.some((a) => /^\s*expires=Thu, 01 Jan 1970/i.test(a)) || value === '';
    if (expired) jar.delete(name); else jar.set(name, value);
  }
}
const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');

async function request(url, init = {}) {
  const res = await fetch(url, {
    ...init,
    redirect: 'manual',
    headers: { ...init.headers, cookie: cookieHeader() },
  });
  storeCookies(res);
  return res;
}

// Follow redirects manually until we leave the OP's origin (i.e. reach the RP's URI).
async function followUntil(startUrl, rpPrefix, init) {
  let url = startUrl;
  let res = await request(url, init);
  for (let hops = 0; hops < 20; hops += 1) {
    if (![301, 302, 303, 307, 308].includes(res.status)) {
      throw new Error(`flow stopped at ${url} with status ${res.status}: ${(await res.text()).slice(0, 500)}`);
    }
    const next = new URL(res.headers.get('location'), url).href;
    log(`  ${res.status} -> ${next.length > 140 ? `${next.slice(0, 140)}...` : next}`);
    if (next.startsWith(rpPrefix)) return new URL(next);
    url = next;
    res = await request(url);
  }
  throw new Error('too many redirects');
}

// Parse the first <form> of an HTML page: action + hidden inputs.
function parseForm(html) {
  const action = html.match(/<form[^>]*action="([^"]+)"/)?.[1];
  const fields = {};
  for (const m of html.matchAll(/<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"/g)) fields[m[1]] = m[2];
  return { action: action?.replaceAll('&amp;', '&'), fields };
}

async function main() {
  const ready = await readyLine();
  log('ready line:', JSON.stringify(ready));
  assert.deepEqual(Object.keys(ready).sort(), ['authority', 'issuer']);
  assert.match(ready.authority, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(ready.issuer, `${ready.authority}/${TENANT}/v2.0`);
  const { issuer } = ready;

  // --- discovery ----------------------------------------------------------------------------
  const discoRes = await fetch(`${issuer}/.well-known/openid-configuration`);
  assert.equal(discoRes.status, 200, 'discovery status');
  const disco = await discoRes.json();
  assert.equal(disco.issuer, issuer, 'discovery issuer');
  assert.equal(disco.authorization_endpoint, `${issuer}/oauth2/v2.0/authorize`);
  assert.equal(disco.token_endpoint, `${issuer}/oauth2/v2.0/token`);
  assert.equal(disco.jwks_uri, `${issuer}/discovery/v2.0/keys`);
  assert.equal(disco.end_session_endpoint, `${issuer}/oauth2/v2.0/logout`);
  assert.ok(disco.id_token_signing_alg_values_supported.includes('RS256'), 'RS256 advertised');
  assert.ok(disco.code_challenge_methods_supported.includes('S256'), 'S256 advertised');
  assert.ok(disco.token_endpoint_auth_methods_supported.includes('client_secret_post'));
  log('discovery ok');

  const jwks = await (await fetch(disco.jwks_uri)).json();
  assert.ok(jwks.keys.length >= 1, 'jwks has keys');
  assert.ok(jwks.keys.every((k) => !k.d), 'jwks exposes public keys only');

  // --- authorization request (PKCE S256, lower-case login_hint) ------------------------------
  const verifier = b64url(crypto.randomBytes(32));
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const state = b64url(crypto.randomBytes(16));
  const nonce = b64url(crypto.randomBytes(16));
  const authUrl = new URL(disco.authorization_endpoint);
  authUrl.search = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: 'code',
    redirect_uri: REDIRECT_URI,
    scope: 'openid profile email',
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    login_hint: 'alice.adams@contoso.com',
  });
  log('authorize (login_hint=alice.adams@contoso.com)');
  const cb = await followUntil(authUrl.href, REDIRECT_URI);
  assert.equal(cb.searchParams.get('state'), state, 'state echoed');
  const code = cb.searchParams.get('code');
  assert.ok(code, `code in callback: ${cb.href}`);
  assert.equal(cb.searchParams.get('error'), null);

  // A request without a known login_hint gets a 400 "unknown user" page (fresh cookie jar).
  {
    const u = new URL(authUrl);
    u.searchParams.set('login_hint', 'mallory@contoso.com');
    let res = await fetch(u, { redirect: 'manual' });
    const cookies = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
    res = await fetch(new URL(res.headers.get('location'), u), { redirect: 'manual', headers: { cookie: cookies } });
    assert.equal(res.status, 400, 'unknown user status');
    assert.match(await res.text(), /unknown user/);
    log('unknown login_hint -> 400 unknown user ok');
  }

  // --- token request (client_secret_post + code_verifier) -------------------------------------
  const tokenRes = await fetch(disco.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
    }),
  });
  const tokens = await tokenRes.json();
  assert.equal(tokenRes.status, 200, `token response: ${JSON.stringify(tokens)}`);
  assert.ok(tokens.id_token, 'id_token present');
  log('token response keys:', Object.keys(tokens).join(','));

  // --- ID token checks -------------------------------------------------------------------------
  const [h, p, s] = tokens.id_token.split('.');
  const header = decodeJwtPart(h);
  const claims = decodeJwtPart(p);
  log('id_token header:', JSON.stringify(header));
  log('id_token claims:', JSON.stringify(claims));
  assert.equal(header.alg, 'RS256', 'alg');
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  assert.ok(header.kid && jwk, 'kid present in JWKS');
  const sigOk = crypto.verify('sha256', Buffer.from(`${h}.${p}`), crypto.createPublicKey({ key: jwk, format: 'jwk' }), Buffer.from(s, 'base64url'));
  assert.ok(sigOk, 'RS256 signature verifies with JWKS key');
  assert.equal(claims.iss, issuer, 'iss');
  assert.equal(claims.aud, CLIENT_ID, 'aud');
  assert.equal(claims.tid, TENANT, 'tid');
  assert.equal(claims.oid, '3f2504e0-4f89-41d3-9a0c-0305e82c3301', 'oid');
  assert.equal(claims.preferred_username, 'Alice.Adams@Contoso.com', 'preferred_username');
  assert.equal(claims.name, 'Alice Adams', 'name');
  assert.equal(claims.email, 'Alice.Adams@Contoso.com', 'email');
  assert.equal(claims.ver, '2.0', 'ver');
  assert.equal(claims.nonce, nonce, 'nonce');
  assert.ok(claims.sub, 'sub');
  log('id_token ok');

  // Code is single use.
  const replay = await fetch(disco.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: CLIENT_ID, client_secret: CLIENT_SECRET,
    }),
  });
  assert.equal(replay.status, 400, 'code replay rejected');

  // --- second login for Bob in the SAME cookie jar, client_secret_basic, no PKCE rejected -----
  {
    const u = new URL(authUrl);
    u.searchParams.delete('code_challenge');
    u.searchParams.delete('code_challenge_method');
    const res = await request(u.href);
    const loc = new URL(res.headers.get('location'));
    assert.equal(loc.searchParams.get('error'), 'invalid_request', 'PKCE is required');
    log('authorize without PKCE -> error=invalid_request ok');

    const v2 = b64url(crypto.randomBytes(32));
    u.searchParams.set('code_challenge', crypto.createHash('sha256').update(v2).digest('base64url'));
    u.searchParams.set('code_challenge_method', 'S256');
    u.searchParams.set('login_hint', 'BOB.BAKER@contoso.com');
    log('authorize (login_hint=BOB.BAKER@contoso.com, existing Alice session)');
    const cb2 = await followUntil(u.href, REDIRECT_URI);
    const tr = await fetch(disco.token_endpoint, {
      method: 'POST',
      headers: {
        'content-type': 'application/x-www-form-urlencoded',
        authorization: `Basic ${Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString('base64')}`,
      },
      body: new URLSearchParams({
        grant_type: 'authorization_code', code: cb2.searchParams.get('code'), redirect_uri: REDIRECT_URI, code_verifier: v2,
      }),
    });
    const t2 = await tr.json();
    assert.equal(tr.status, 200, `bob token response: ${JSON.stringify(t2)}`);
    const c2 = decodeJwtPart(t2.id_token.split('.')[1]);
    assert.equal(c2.oid, '6ba7b810-9dad-41d1-80b4-00c04fd430c8', 'bob oid');
    assert.equal(c2.preferred_username, 'bob.baker@contoso.com', 'bob upn');
    log('bob (client_secret_basic, user switch) ok');
    tokens.id_token = t2.id_token;
  }

  // --- RP-initiated logout: GET end_session -> parse form -> POST confirm -> post_logout uri --
  {
    const u = new URL(disco.end_session_endpoint);
    u.search = new URLSearchParams({ id_token_hint: tokens.id_token, post_logout_redirect_uri: POST_LOGOUT_URI, state: 'bye' });
    const res = await request(u.href);
    assert.equal(res.status, 200, 'logout page');
    const { action, fields } = parseForm(await res.text());
    assert.ok(action && fields.xsrf, 'logout form parsed');
    const done = await followUntil(new URL(action, u).href, POST_LOGOUT_URI, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields),
    });
    assert.equal(done.searchParams.get('state'), 'bye', 'logout state echoed');
    log('logout ok ->', done.href);
  }

  // --- stdout contract + clean shutdown -------------------------------------------------------
  child.kill('SIGTERM');
  const [exitCode] = await once(child, 'exit');
  assert.equal(exitCode, 0, 'provider exits 0 on SIGTERM');
  assert.equal(stdoutLines.length, 1, `exactly one stdout line, got: ${JSON.stringify(stdoutLines)}`);
  log('provider stderr was:\n' + stderr.replace(/^/gm, '    | '));
  log('PASS');
}

main().catch((err) => {
  console.error('smoke: FAIL:', err.message);
  if (err.stack) console.error(err.stack);
  console.error('provider stderr:\n' + stderr);
  child.kill('SIGKILL');
  process.exit(1);
});
