// A CIBA OpenID provider for tests and the demo, built on the npm package oidc-provider.
//
// Usage: node server.mjs CONFIG.json   (prints one JSON line {"issuer": ...} when ready)
//
// The OP itself is oidc-provider: discovery, client authentication, the
// backchannel endpoint, the token endpoint, JWKS, introspection and revocation. Around it this
// file adds what a test needs and a real OP would get from the user's phone. None of it has
// any authentication, so each group is off (404) unless the config turns it on:
//
// "adminRoutes": true (the demo, tests): whoever reaches the OP plays the user's phone.
//   - /approver                  a page that plays the phone: pending requests, Approve / Deny
//   - /admin/requests            the backchannel requests seen, with their parameters and status
//   - /admin/requests/ID/approve the user approves (optionally as another account: a forged sub)
//   - /admin/requests/ID/deny    the user denies
//   - /admin/token-requests      every token request received (time, auth_req_id, status, error,
//                                retry_after)
//   - /admin/pings               every ping the OP sent to a client's notification endpoint
//   - /interaction/UID           the sign-in page of the authorization code flow (the codec
//                                server's operator sign-in): pick an account, signed in as it
// "testRoutes": true (tests only, never the demo or docker-compose): hands out tokens.
//   - /admin/issued              every token response given, by auth_req_id (to prove none leaks);
//                                without the flag the OP does not even keep them
//   - /admin/faults              answers oidc-provider never gives: slow_down, 503 + Retry-After,
//                                an earlier token response replayed, a dropped ping, a decision
//                                made at once (racing the acknowledgement)
//   - /admin/rotate-keys         new signing keys (new kids) replace the old ones in the JWKS
// With "dpopNonces": true the OP requires a server nonce in every DPoP proof (use_dpop_nonce).
// With "ackInterval" (seconds, or {client_id: seconds}) the acknowledgement carries that
// interval (oidc-provider sends none).
// With "idTokenBindingClaims" the ID token also carries the claims CIBA push mode requires
// (urn:openid:params:jwt:claim:auth_req_id, at_hash, rt_hash), so validation of them is proven
// against a real OP's signature.
// With "features" (an object) the provider's features below are deep-merged with it (objects
// merge, other values replace, null removes this OP's own setting so oidc-provider's default
// applies): a test turns a feature on or changes one option without restating the others.
// E.g. {"ciba": {"validateBindingMessage": null}} gives oidc-provider's own binding message
// rule (^[a-zA-Z0-9-._+/!?#]{1,20}$) instead of this OP's plain line of up to 128 characters.
// With "unauthorizedClients" (client ids) those clients' backchannel requests get
// unauthorized_client (CIBA §13; oidc-provider itself answers invalid_request).
// A login_hint_token "expired" gets expired_login_hint_token; "lht:ACCOUNT" names an account.
// With the environment variable TEST_OP_STOCK=1 the acknowledgement and the tokens are exactly
// oidc-provider's, whatever the config says ("idTokenBindingClaims" and "ackInterval" are
// ignored): what binds a token response to its request is proven against a stock OP. The
// routes that play the phone and the test faults stay as configured.

import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { parse as parseQuery } from 'node:querystring';

import Provider, { errors } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import initializeKeyStore from 'oidc-provider/lib/helpers/initialize_keystore.js';
import LRU from 'oidc-provider/lib/helpers/lru.js';
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

// A string "env:NAME" in the config is the value of the environment variable NAME, so
// secrets stay out of config files (docker-compose passes them in the environment).
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'), (key, value) => {
  if (typeof value !== 'string' || !value.startsWith('env:')) return value;
  const name = value.slice(4);
  if (process.env[name] === undefined) throw new Error(`config: environment variable ${name} is not set`);
  return process.env[name];
});
const host = config.host ?? '127.0.0.1';
const accounts = config.accounts ?? { alice: { email: 'alice@example.com' } };
const resource = config.resource ?? 'https://payments.example.test/';
const AUTH_REQ_ID_CLAIM = 'urn:openid:params:jwt:claim:auth_req_id';
// Only the literal true turns a group of unauthenticated routes on (a string "false" does not).
const adminRoutes = config.adminRoutes === true;
const testRoutes = config.testRoutes === true;
const stock = process.env.TEST_OP_STOCK === '1';

const requests = new Map(); // auth_req_id -> what the "phone" shows, and its status
const tokenRequests = []; // {auth_req_id, at, status}
const pings = []; // {auth_req_id, at, status}: what the OP's ping to the client got
const issued = new Map(); // auth_req_id -> the token response body the OP gave
let faults = []; // [{type, auth_req_id?, remaining, ...}]

function signingKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, kid: `rsa-${randomBytes(4).toString('hex')}`, use: 'sig' },
    { ...ec, kid: `ec-${randomBytes(4).toString('hex')}`, use: 'sig' },
  ];
}

function findAccountId(hint) {
  if (Object.hasOwn(accounts, hint)) return hint;
  return Object.keys(accounts).find((id) => accounts[id].email === hint);
}

function takeFault(type, authReqId) {
  const fault = faults.find((f) => f.type === type && f.remaining > 0
    && (f.auth_req_id === undefined || f.auth_req_id === authReqId));
  if (fault) fault.remaining -= 1;
  return fault;
}

function json(res, status, body, headers = {}) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(body === undefined ? undefined : JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks);
}

// With "tls": {"cert", "key"} (PEM paths) the OP serves HTTPS, as it must off loopback.
// Mutual TLS (RFC 8705; turn it on with "features": {"mTLS": {...}}): with "clientCa" (a PEM
// path) in "tls" the OP asks every client for a certificate, and one that chains to clientCa is
// "authorized" (tls_client_auth); a self-signed one is still read (self_signed_tls_client_auth).
// With "mtlsAliases": true only a second HTTPS listener asks for certificates, and discovery
// sends clients using mutual TLS there (mtls_endpoint_aliases, RFC 8705 §5).
function listening(server, port) {
  return new Promise((resolve) => { server.listen(port, host, () => resolve(server)); });
}
const tlsOptions = config.tls ? { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) } : undefined;
const clientCertificates = config.tls?.clientCa
  ? { requestCert: true, rejectUnauthorized: false, ca: readFileSync(config.tls.clientCa) }
  : undefined;
const server = await listening(
  tlsOptions
    ? createTlsServer({ ...tlsOptions, ...(config.mtlsAliases === true ? {} : clientCertificates) })
    : createServer(),
  config.port ?? 0,
);
const mtlsServer = config.mtlsAliases === true && tlsOptions && clientCertificates
  ? await listening(createTlsServer({ ...tlsOptions, ...clientCertificates }), 0)
  : undefined;
const issuer = config.issuer ?? `${config.tls ? 'https' : 'http'}://${host}:${server.address().port}`;
const mtlsOrigin = mtlsServer ? `https://${host}:${mtlsServer.address().port}` : undefined;
const approverPage = readFileSync(new URL('./public/approver.html', import.meta.url));

// oidc-provider's memory adapter keeps at most 1,000 entries; the benchmark holds thousands of
// pending requests at once, so this OP gives the same adapter a larger store. Entries outlive
// their expiry by the default clock tolerance (15 s), as with the default adapter.
const storage = new LRU({ maxSize: config.storageSize ?? 1_000_000 });
const CLOCK_TOLERANCE = 15;

// A test's "providerOptions" are merged into these options, and its "features" into the
// features below: objects key by key (so {"dPoP": {"enabled": true}} turns one feature on and
// keeps the others), null deletes a key (oidc-provider's default applies), anything else
// (arrays, functions, strings) replaces.
function deepMerge(base, override) {
  const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);
  if (!isObject(base) || !isObject(override)) return override;
  const merged = { ...base };
  for (const [key, value] of Object.entries(override)) {
    if (value === null) delete merged[key];
    else merged[key] = deepMerge(base[key], value);
  }
  return merged;
}

const unauthorizedClients = new Set(config.unauthorizedClients ?? []);

// The certificate the client presented on this request's TLS connection (a Node X509Certificate).
function peerCertificate(ctx) {
  return ctx.socket.getPeerX509Certificate?.() ?? undefined;
}

// RFC 8705 §2.1.2: the registered tls_client_auth_subject_dn (RFC 4514, last RDN first) or
// tls_client_auth_san_dns against the certificate.
function certificateSubjectMatches(ctx, property, expected) {
  const cert = peerCertificate(ctx);
  if (!cert) return false;
  if (property === 'tls_client_auth_subject_dn') return cert.subject.split('\n').reverse().join(',') === expected;
  if (property === 'tls_client_auth_san_dns') {
    return (cert.subjectAltName ?? '').split(', ').includes(`DNS:${expected}`);
  }
  return false;
}

const OIDC_PATHS = {
  token_endpoint: '/token',
  backchannel_authentication_endpoint: '/backchannel',
  revocation_endpoint: '/token/revocation',
  introspection_endpoint: '/token/introspection',
};

const provider = new Provider(issuer, deepMerge({
  adapter: (model) => new MemoryAdapter(model, storage, CLOCK_TOLERANCE),
  clockTolerance: CLOCK_TOLERANCE,
  clients: config.clients,
  jwks: { keys: signingKeys() },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  acrValues: config.acrValues ?? ['urn:example:acr:basic', 'urn:example:acr:mfa'],
  scopes: ['openid', 'offline_access', 'payments'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  // Pings go to the callback service on loopback. oidc-provider passes an SSRF-guarding
  // dispatcher that refuses special-use addresses such as 127.0.0.1; this test OP drops it.
  fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
  ...(mtlsOrigin
    ? {
      discovery: {
        mtls_endpoint_aliases: Object.fromEntries(
          Object.entries(OIDC_PATHS).map(([name, path]) => [name, mtlsOrigin + path]),
        ),
      },
    }
    : {}),
  features: deepMerge({
    devInteractions: { enabled: false },
    // Off unless a test turns it on; what the TLS connection tells is read here when it is.
    mTLS: {
      enabled: false,
      getCertificate: peerCertificate,
      certificateAuthorized: (ctx) => ctx.socket.authorized === true,
      certificateSubjectMatches,
    },
    // With "dpopNonces": true every DPoP proof must carry a nonce from this OP (RFC 9449 §8).
    ...(config.dpopNonces === true
      ? { dPoP: { enabled: true, nonceSecret: randomBytes(32), requireNonce: () => true } }
      : {}),
    introspection: { enabled: true },
    // Access tokens are for the payment API (a resource server); RFC 9396 needs a resource.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return { scope: 'payments', audience: resource, accessTokenFormat: 'opaque', accessTokenTTL: 600 };
      },
    },
    revocation: {
      enabled: true,
      // Every client may revoke its own tokens (RFC 7009); a resource server (a confidential
      // client with no grant types) may also revoke the access tokens shown to it, once used.
      allowedPolicy: (ctx, client, token) => token.clientId === client.clientId
        || (token.kind === 'AccessToken' && client.grantTypes.length === 0 && client.clientAuthMethod !== 'none'),
    },
    richAuthorizationRequests: {
      enabled: true,
      // The example agents' types and the README's example project's; any other is refused.
      types: {
        payment_initiation: { validate() {} },
        account_reset: { validate() {} },
        production_change: { validate() {} },
        agent_tool_call: { validate() {} },
        service_job: { validate() {} },
      },
      authorizationDetailsForGrantSource: (ctx, source) => source.rar,
      authorizationDetailsForAccessToken: (ctx, token, source) => source.rar,
      authorizationDetailsForIntrospection: (ctx, token) => token.rar,
    },
    ciba: {
      enabled: true,
      deliveryModes: ['poll', 'ping'],
      processLoginHint: (ctx, loginHint) => findAccountId(loginHint),
      processLoginHintToken(ctx, token) {
        if (token === 'expired') throw new errors.ExpiredLoginHintToken('the login_hint_token has expired');
        return token.startsWith('lht:') ? findAccountId(token.slice(4)) : undefined;
      },
      validateRequestContext(ctx) {
        if (unauthorizedClients.has(ctx.oidc.client.clientId)) {
          throw new errors.UnauthorizedClient('this client may not use CIBA here');
        }
      },
      validateBindingMessage(ctx, message) {
        // Plain text on one line; longer than oidc-provider's default of 20 characters.
        if (message !== undefined && (message.length > 128 || /[\x00-\x1f\x7f]/.test(message))) {
          throw new errors.InvalidBindingMessage('binding_message must be one line of at most 128 characters');
        }
      },
      verifyUserCode(ctx, account, userCode) {
        const expected = accounts[account.accountId]?.user_code;
        if (ctx.oidc.client.backchannelUserCodeParameter && !userCode) throw new errors.MissingUserCode();
        if (expected !== undefined && userCode !== undefined && userCode !== expected) throw new errors.InvalidUserCode();
      },
      triggerAuthenticationDevice(ctx, request, account, client) {
        const { params } = request;
        requests.set(request.jti, {
          auth_req_id: request.jti,
          client_id: client.clientId,
          account: account.accountId,
          scope: request.scope,
          binding_message: params.binding_message ?? null,
          acr_values: params.acr_values ?? null,
          authorization_details: params.authorization_details ? JSON.parse(params.authorization_details) : null,
          requested_expiry: params.requested_expiry ? Number(params.requested_expiry) : null,
          created_at: Date.now() / 1000,
          expires_at: Date.now() / 1000 + request.expiration,
          status: 'pending',
        });
        // An approver faster than the client: the decision (and its ping) races the acknowledgement.
        if (takeFault('approve_at_once', undefined)) setImmediate(() => decide(request.jti, {}, true));
      },
    },
  }, config.features ?? {}),
  findAccount(ctx, id) {
    if (!Object.hasOwn(accounts, id)) return undefined;
    return {
      accountId: id,
      claims: () => ({ sub: id, email: accounts[id].email, email_verified: true }),
    };
  },
  ttl: {
    BackchannelAuthenticationRequest(ctx) {
      const requested = Number(ctx?.oidc?.params?.requested_expiry);
      return Number.isSafeInteger(requested) && requested > 0 ? Math.min(requested, 7 * 24 * 3600) : 600;
    },
  },
}, config.providerOptions ?? {}));
provider.proxy = false;

if (config.idTokenBindingClaims && !stock) {
  // CIBA §10.3.1 binding claims, added the way oidc-provider adds at_hash for hybrid flows.
  const { issue } = provider.IdToken.prototype;
  provider.IdToken.prototype.issue = function issueWithBinding(options) {
    const entities = this.ctx?.oidc?.entities ?? {};
    if (options?.use === 'idtoken' && entities.BackchannelAuthenticationRequest) {
      this.set(AUTH_REQ_ID_CLAIM, entities.BackchannelAuthenticationRequest.jti);
      if (entities.AccessToken) this.set('at_hash', entities.AccessToken.jti);
      if (entities.RefreshToken) {
        const digest = createHash('sha256').update(entities.RefreshToken.jti).digest();
        this.set('rt_hash', digest.subarray(0, 16).toString('base64url'));
      }
    }
    return issue.call(this, options);
  };
}

// Pings, recorded; a planned fault drops one (the client then relies on its fallback poll).
const { backchannelPing } = provider.Client.prototype;
provider.Client.prototype.backchannelPing = async function recordedPing(request) {
  const record = { auth_req_id: request.jti, at: Date.now() / 1000, status: null };
  pings.push(record);
  if (takeFault('drop_ping', request.jti)) {
    record.status = 'dropped';
    return;
  }
  try {
    await backchannelPing.call(this, request);
    record.status = 'delivered';
  } catch (err) {
    record.status = `failed: ${err.message}`;
    throw err;
  }
};

// The acknowledgement and token responses, as a test may want them altered.
provider.use(async (ctx, next) => {
  await next();
  if (ctx.oidc?.route === 'backchannel_authentication' && ctx.status === 200 && config.ackInterval && !stock) {
    const interval = typeof config.ackInterval === 'object'
      ? config.ackInterval[ctx.oidc.client.clientId] : config.ackInterval;
    if (interval) ctx.body.interval = interval;
  }
  if (ctx.oidc?.route === 'token' && ctx.status === 200 && ctx.oidc.params?.auth_req_id) {
    // An OP that states another grant than the one asked (adds identity scopes, narrows it).
    const grantedScope = requests.get(ctx.oidc.params.auth_req_id)?.granted_scope;
    if (grantedScope !== undefined) ctx.body.scope = grantedScope;
    // Token responses are kept only for the test routes (/admin/issued, the replay fault).
    if (testRoutes) {
      const authReqId = ctx.oidc.params.auth_req_id;
      issued.set(authReqId, ctx.body);
      const replay = takeFault('replay_tokens', authReqId);
      if (replay && issued.has(replay.from)) ctx.body = issued.get(replay.from);
    }
  }
});

provider.on('grant.success', (ctx) => {
  const entry = requests.get(ctx.oidc.params?.auth_req_id);
  if (entry) entry.status = 'tokens_issued';
});

const decide = async (authReqId, body, approve) => {
  const request = await provider.BackchannelAuthenticationRequest.find(authReqId, { ignoreExpiration: true });
  const entry = requests.get(authReqId);
  if (!request || !entry) return [404, { error: 'unknown auth_req_id' }];
  if (entry.status !== 'pending') return [409, { error: `request is ${entry.status}` }];
  // The moment the decision is recorded (the benchmark measures decision-to-resume from here).
  entry.decided_at = Date.now() / 1000;
  // The decision is saved before oidc-provider pings; a failed ping does not undo it.
  const deliver = async (result, options) => {
    try {
      await provider.backchannelResult(request, result, options);
    } catch (err) {
      entry.ping_error = String(err.message);
    }
  };
  if (!approve) {
    await deliver(new errors.AccessDenied('the end-user denied the request'));
    entry.status = 'denied';
    return [200, entry];
  }
  // A forged approval: the OP signs tokens for another account than the one asked about.
  if (body.as_account) request.accountId = body.as_account;
  // The scope the token response will state, whatever was granted (see the token middleware).
  if (typeof body.granted_scope === 'string') entry.granted_scope = body.granted_scope;
  const grant = new provider.Grant({ clientId: request.clientId, accountId: request.accountId });
  grant.addOIDCScope(request.scope);
  if (request.resource) grant.addResourceScope(request.resource, request.scope);
  await grant.save();
  const rar = request.params.authorization_details ? JSON.parse(request.params.authorization_details) : undefined;
  await deliver(grant, {
    acr: body.acr ?? request.params.acr_values?.split(' ')[0],
    amr: body.amr ?? ['pwd', 'hwk'],
    authTime: Math.floor(Date.now() / 1000),
    rar: body.authorization_details ?? rar,
  });
  entry.status = 'approved';
  return [200, entry];
};

const notFound = (res) => json(res, 404, { error: 'not found' });

const escapeHtml = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// The authorization code flow's sign-in (oidc-provider's interaction): this OP plays the user,
// so the page offers its accounts and signs in as the one picked, granting the scopes asked.
async function signIn(req, res, submitted) {
  const details = await provider.interactionDetails(req, res);
  if (!submitted) {
    const buttons = Object.keys(accounts)
      .map((id) => `<button type="submit" name="account" value="${escapeHtml(id)}">${escapeHtml(id)}</button>`)
      .join(' ');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    return res.end(`<!doctype html><html><head><meta charset="utf-8"><title>Sign in</title>
<link rel="icon" href="data:,"></head><body><h1>Sign in to ${escapeHtml(details.params.client_id)}</h1>
<p>This demo OP signs you in as the account you pick.</p>
<form method="post" action="/interaction/${escapeHtml(details.uid)}/login">${buttons}</form></body></html>`);
  }
  if (req.method !== 'POST') return notFound(res);
  const picked = parseQuery((await readBody(req)).toString()).account;
  const accountId = details.prompt.name === 'login' ? picked : details.session?.accountId;
  if (typeof accountId !== 'string' || !Object.hasOwn(accounts, accountId)) {
    return json(res, 400, { error: 'unknown account' });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, {
    mergeWithLastSubmission: false,
  });
}

async function admin(req, res, url) {
  // Off: the same 404 as any unknown path, before the body is read.
  if (!adminRoutes && !testRoutes) return notFound(res);
  const body = req.method === 'POST' ? JSON.parse((await readBody(req)).toString() || '{}') : {};
  const match = url.pathname.match(/^\/admin\/requests\/([^/]+)\/(approve|deny)$/);
  if (adminRoutes && req.method === 'POST' && match) {
    const [status, result] = await decide(decodeURIComponent(match[1]), body, match[2] === 'approve');
    return json(res, status, result);
  }
  if (adminRoutes && url.pathname === '/admin/requests') {
    let list = [...requests.values()];
    if (url.searchParams.has('status')) list = list.filter((r) => r.status === url.searchParams.get('status'));
    return json(res, 200, list);
  }
  if (testRoutes && url.pathname === '/admin/issued') {
    // The token responses the OP gave: tests look for these strings where no token may appear.
    return json(res, 200, Object.fromEntries(issued));
  }
  if (adminRoutes && url.pathname === '/admin/pings') {
    return json(res, 200, pings);
  }
  if (adminRoutes && url.pathname === '/admin/token-requests') {
    const id = url.searchParams.get('auth_req_id');
    const since = Number(url.searchParams.get('since') ?? 0);
    const selected = tokenRequests.filter((t) => (id === null || t.auth_req_id === id) && t.at >= since);
    return json(res, 200, url.searchParams.has('count') ? { count: selected.length } : selected);
  }
  if (testRoutes && url.pathname === '/admin/rotate-keys' && req.method === 'POST') {
    // What the provider does with its configured jwks at start, again with new keys.
    initializeKeyStore.call(provider, { keys: signingKeys() });
    return json(res, 200, { kids: [...instance(provider).keystore].map((key) => key.kid) });
  }
  if (testRoutes && url.pathname === '/admin/faults' && req.method === 'POST') {
    faults = (body.faults ?? []).map((f) => ({ remaining: 1, ...f }));
    return json(res, 200, faults);
  }
  return notFound(res);
}

const callback = provider.callback();
const tokenPath = new URL(issuer).pathname.replace(/\/$/, '') + '/token';

async function handle(req, res) {
  const url = new URL(req.url, issuer);
  try {
    if (url.pathname.startsWith('/admin/')) return await admin(req, res, url);
    const interaction = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
    if (adminRoutes && interaction) return await signIn(req, res, interaction[2] !== undefined);
    if (adminRoutes && req.method === 'GET' && url.pathname === '/approver') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      return res.end(approverPage);
    }
    if (req.method === 'POST' && url.pathname === tokenPath) {
      // Record the request, then answer a planned fault or hand the body on to oidc-provider.
      const raw = await readBody(req);
      const authReqId = parseQuery(raw.toString()).auth_req_id;
      const record = { auth_req_id: authReqId ?? null, at: Date.now() / 1000, status: null, error: null, retry_after: null };
      tokenRequests.push(record);
      res.on('finish', () => { record.status = res.statusCode; });
      // The answer's OAuth error code and Retry-After too: a client's pacing is judged by them.
      const end = res.end.bind(res);
      res.end = (chunk, ...rest) => {
        try { record.error = JSON.parse(String(chunk)).error ?? null; } catch { record.error = null; }
        return end(chunk, ...rest);
      };
      if (takeFault('slow_down', authReqId)) {
        return json(res, 400, { error: 'slow_down', error_description: 'polling too fast' });
      }
      const unavailable = takeFault('unavailable', authReqId);
      if (unavailable) {
        record.retry_after = unavailable.retry_after ?? 1;
        return json(res, 503, { error: 'temporarily_unavailable' }, { 'retry-after': String(unavailable.retry_after ?? 1) });
      }
      req.body = raw;
    }
    return callback(req, res);
  } catch (err) {
    return json(res, 500, { error: 'server_error', error_description: String(err.message) });
  }
}
server.on('request', handle);
mtlsServer?.on('request', handle);

if (adminRoutes) {
  process.stderr.write(`WARNING: admin routes on (adminRoutes): anyone who reaches ${issuer} can approve its requests\n`);
}
if (testRoutes) {
  process.stderr.write(`WARNING: test routes on (testRoutes): ${issuer}/admin/issued hands out every token; tests only\n`);
}
if (stock) process.stderr.write('TEST_OP_STOCK=1: acknowledgements and ID tokens exactly as oidc-provider issues them\n');
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => { server.close(); mtlsServer?.close(); process.exit(0); });
}
