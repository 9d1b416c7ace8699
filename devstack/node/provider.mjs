// The identity provider of the sts-bridge devstack: panva's oidc-provider
// (OpenID Certified) configured to look like the Keycloak realm of the real
// platform. Started by devstack/idp.py: `node provider.mjs <config.json>`.
//
// Everything is in memory; the process listens on 127.0.0.1 only.
// Tokens and secrets are never logged: one line per request (method, path
// without query string, status) goes to stderr.

import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as querystring from 'node:querystring';

// oidc-provider 9 warns "Unsupported runtime" on Node 20 when its entry point
// is evaluated; it works (measured), so drop that line. The in-memory adapter
// warning is expected too (a throwaway IdP). Other warnings pass through.
const originalWarn = console.warn;
const EXPECTED_WARNINGS = ['Unsupported runtime', 'in-memory adapter is used'];
console.warn = (...args) => {
  if (typeof args[0] === 'string' && EXPECTED_WARNINGS.some((w) => args[0].includes(w))) return;
  originalWarn(...args);
};
const { default: Provider, errors } = await import('oidc-provider');
// The built-in refresh_token grant and the grant helpers (exact version pinned
// in package.json; both modules are plain files of the package).
const refreshGrant = await import('oidc-provider/lib/actions/grants/refresh_token.js');
const grantHelpers = await import('oidc-provider/lib/helpers/grants.js');

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node provider.mjs <config.json>');
  process.exit(2);
}
const cfg = JSON.parse(readFileSync(configPath, 'utf8'));

const OIDC_SCOPES = ['openid', 'offline_access', 'profile', 'email'];
const oidcScopes = new Set(OIDC_SCOPES);
const platformScopes = cfg.platform_scopes || [];
// The scopes an API access token may carry (Keycloak puts them all in `scope`).
const apiScopes = new Set([...OIDC_SCOPES, ...platformScopes]);
const audience = cfg.audience;

const usersBySub = new Map();
const usersByName = new Map();
for (const user of cfg.users) {
  usersBySub.set(user.sub, user);
  usersByName.set(user.username, user);
}

const clientsById = new Map();
for (const client of cfg.clients) {
  clientsById.set(client.metadata.client_id, client);
}
// Service accounts (Keycloak convention): a confidential client that may use
// client credentials is also an account whose sub is its client id.
function serviceAccountClaims(clientId) {
  return {
    sub: clientId,
    preferred_username: `service-account-${clientId}`,
    email: undefined,
    groups: [],
  };
}

function userClaims(user) {
  return {
    sub: user.sub,
    preferred_username: user.username,
    name: user.name,
    given_name: user.given_name,
    family_name: user.family_name,
    email: user.email,
    email_verified: true,
    groups: user.groups,
  };
}

function claimsForAccount(accountId) {
  const user = usersBySub.get(accountId);
  if (user) return userClaims(user);
  const client = clientsById.get(accountId);
  if (client && client.service_account) return serviceAccountClaims(accountId);
  return undefined;
}

// Services that receive users' tokens (their own audience) and may exchange
// them for an API token (RFC 8693, below): client id -> audience.
const exchangeAudiences = new Map(
  cfg.clients.filter((c) => c.exchange_audience).map((c) => [c.metadata.client_id, c.exchange_audience]),
);
const serviceAudiences = new Set(exchangeAudiences.values());
// Clients whose users' access tokens are opaque (RFC 7662 introspection tests).
const opaqueClients = new Set(cfg.clients.filter((c) => c.opaque_tokens).map((c) => c.metadata.client_id));
// Only the services (exchange clients) may introspect tokens: a token's
// claims are for the resource servers that receive it.
const introspectors = new Set(exchangeAudiences.keys());

function resourceServerInfo(indicator = audience, format = 'jwt') {
  return {
    scope: [...apiScopes].join(' '),
    audience: indicator,
    accessTokenTTL: cfg.access_token_ttl,
    accessTokenFormat: format,
    ...(format === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
  };
}

const configuration = {
  clients: cfg.clients.map((c) => c.metadata),
  jwks: { keys: [cfg.jwk] },
  cookies: { keys: cfg.cookie_keys },
  scopes: OIDC_SCOPES,
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name', 'given_name', 'family_name', 'groups'],
    email: ['email', 'email_verified'],
  },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  rotateRefreshToken: true,
  // Keycloak issues a refresh token for every user login (code, device), with
  // or without offline_access; client credentials are handled below.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  ttl: {
    // Exchanged tokens may live shorter than logins (tests of the re-exchange).
    AccessToken: (ctx, token) => (token.gty === 'token_exchange' && cfg.exchange_token_ttl)
      || cfg.access_token_ttl,
    ClientCredentials: cfg.access_token_ttl,
    AuthorizationCode: 60,
    IdToken: cfg.access_token_ttl,
    DeviceCode: cfg.device_code_ttl,
    RefreshToken: cfg.refresh_token_ttl,
    Grant: cfg.refresh_token_ttl,
    Session: cfg.refresh_token_ttl,
    Interaction: 3600,
  },
  findAccount: async (ctx, id) => {
    const claims = claimsForAccount(id);
    if (!claims) return undefined;
    return {
      accountId: id,
      async claims() {
        return { ...claims };
      },
    };
  },
  extraTokenClaims: async (ctx, token) => {
    const claims = token.accountId ? claimsForAccount(token.accountId) : undefined;
    const extra = { azp: token.clientId, typ: 'Bearer' };
    // RFC 8693 section 4.1: an exchanged token names the party acting for the subject.
    if (token.gty === 'token_exchange') extra.act = { sub: token.clientId };
    if (claims) {
      extra.preferred_username = claims.preferred_username;
      if (claims.email) {
        extra.email = claims.email;
        extra.email_verified = true;
      }
      if (claims.name) extra.name = claims.name;
      extra.groups = claims.groups;
    }
    return extra;
  },
  interactions: {
    url: async (ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      allowedPolicy: async (ctx, client) => introspectors.has(client.clientId),
    },
    revocation: { enabled: true },
    userinfo: { enabled: true },
    claimsParameter: { enabled: true },
    deviceFlow: {
      enabled: true,
      charset: 'base-20',
      mask: '****-****',
      userCodeInputSource,
      userCodeConfirmSource,
      successSource,
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => audience,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (ctx, indicator, client) => {
        if (indicator !== audience && !serviceAudiences.has(indicator)) {
          throw new errors.InvalidTarget();
        }
        return resourceServerInfo(indicator, opaqueClients.has(client.clientId) ? 'opaque' : 'jwt');
      },
    },
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Error', `<p class="error">${esc(out.error)}: ${esc(out.error_description || '')}</p>`);
  },
};

const provider = new Provider(cfg.issuer, configuration);
provider.proxy = false;

// ---------------------------------------------------------------- HTML pages
function esc(value) {
  return String(value ?? '')
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

function page(title, body) {
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>
${body}
</body></html>`;
}

async function userCodeInputSource(ctx, form, out, err) {
  let msg = '<p>Enter the code displayed on your device.</p>';
  if (err && (err.userCode || err.name === 'NoCodeError')) {
    msg = '<p class="error">The code you entered is incorrect. Try again.</p>';
  } else if (err && err.name === 'AbortedError') {
    msg = '<p class="error">The sign-in request was interrupted.</p>';
  } else if (err) {
    msg = '<p class="error">There was an error processing your request.</p>';
  }
  ctx.body = page('Device sign-in', `${msg}\n${form}\n<button type="submit" form="op.deviceInputForm">Continue</button>`);
}

async function userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
  ctx.body = page('Confirm device', `<p><strong>${esc(client.clientName || client.clientId)}</strong> asks to sign in.</p>
<p>The device should show this code: <code>${esc(userCode)}</code></p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" value="yes" name="abort">Abort</button>`);
}

async function successSource(ctx) {
  ctx.body = page('Sign-in success', '<p>Your device is signed in. You can close this page.</p>');
}

function loginPage(uid, params, error) {
  return page('Sign in', `${error ? `<p class="error">${esc(error)}</p>` : ''}
<p>Client: <code>${esc(params.client_id)}</code></p>
<form id="login" method="post" action="/interaction/${esc(uid)}/login">
  <label>Username <input type="text" name="username" value="${esc(params.login_hint || '')}" autofocus></label>
  <label>Password <input type="password" name="password"></label>
  <button type="submit">Sign in</button>
</form>
<form id="abort" method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`);
}

function consentPage(uid, params, details) {
  const scopes = [
    ...(details.missingOIDCScope || []),
    ...Object.values(details.missingResourceScopes || {}).flat(),
  ];
  return page('Authorize', `<p>Client <code>${esc(params.client_id)}</code> asks for:</p>
<ul>${[...new Set(scopes)].map((s) => `<li>${esc(s)}</li>`).join('')}</ul>
<form id="consent" method="post" action="/interaction/${esc(uid)}/confirm"><button type="submit">Allow</button></form>
<form id="abort" method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Deny</button></form>`);
}

// ------------------------------------------------------- interaction routes
async function readForm(ctx) {
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > 64 * 1024) ctx.throw(413);
    chunks.push(chunk);
  }
  return querystring.parse(Buffer.concat(chunks).toString('utf8'));
}

function autoConsent(params) {
  const client = clientsById.get(params.client_id);
  return cfg.auto_approve || Boolean(client && client.first_party);
}

async function grantConsent(details) {
  const { prompt: { details: missing }, params, session: { accountId } } = details;
  let { grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId, clientId: params.client_id });
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  grantId = await grant.save();
  return details.grantId ? { consent: {} } : { consent: { grantId } };
}

async function interactionRoutes(ctx, next) {
  const match = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?$/.exec(ctx.path);
  if (!match) return next();
  const [, uid, action] = match;
  ctx.set('cache-control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== uid) ctx.throw(400, 'interaction mismatch');
  const { prompt, params } = details;

  if (ctx.method === 'GET' && !action) {
    if (prompt.name === 'login') {
      const hinted = params.login_hint && usersByName.get(params.login_hint);
      if (cfg.auto_approve && hinted) {
        await provider.interactionFinished(ctx.req, ctx.res, {
          login: { accountId: hinted.sub },
        }, { mergeWithLastSubmission: false });
        return undefined;
      }
      ctx.type = 'html';
      ctx.body = loginPage(uid, params);
      return undefined;
    }
    if (prompt.name === 'consent') {
      if (autoConsent(params)) {
        const result = await grantConsent(details);
        await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
        return undefined;
      }
      ctx.type = 'html';
      ctx.body = consentPage(uid, params, prompt.details);
      return undefined;
    }
    ctx.throw(501, `unknown prompt ${prompt.name}`);
  }

  if (ctx.method === 'POST' && action === 'login') {
    if (prompt.name !== 'login') ctx.throw(400, 'not a login prompt');
    const form = await readForm(ctx);
    const user = usersByName.get(String(form.username || ''));
    if (!user || user.password !== String(form.password || '')) {
      ctx.status = 401;
      ctx.type = 'html';
      ctx.body = loginPage(uid, params, 'Invalid username or password.');
      return undefined;
    }
    await provider.interactionFinished(ctx.req, ctx.res, {
      login: { accountId: user.sub },
    }, { mergeWithLastSubmission: false });
    return undefined;
  }

  if (ctx.method === 'POST' && action === 'confirm') {
    if (prompt.name !== 'consent') ctx.throw(400, 'not a consent prompt');
    await readForm(ctx);
    const result = await grantConsent(details);
    await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
    return undefined;
  }

  if (ctx.method === 'POST' && action === 'abort') {
    await readForm(ctx);
    await provider.interactionFinished(ctx.req, ctx.res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return undefined;
  }

  ctx.throw(405);
  return undefined;
}

// ------------------------------------------------- client credentials grant
// Replaces the built-in handler to behave like a Keycloak service account:
// the token's sub is the client id, unknown scopes are ignored, the access
// token is a JWT for the API audience (also without a `resource` parameter),
// and asking for offline_access yields a real, rotating refresh token bound
// to a Grant of the service account.
async function clientCredentialsHandler(ctx) {
  const { client } = ctx.oidc;
  const { resource } = ctx.oidc.params;
  if (resource !== undefined && resource !== audience) {
    throw new errors.InvalidTarget();
  }
  if (!clientsById.get(client.clientId)?.service_account) {
    throw new errors.UnauthorizedClient('client is not a service account');
  }
  const requested = (ctx.oidc.params.scope || '').split(' ').filter(Boolean);
  const scopes = [...new Set(requested.filter((s) => apiScopes.has(s)))];
  const scope = scopes.join(' ');
  const accountId = client.clientId;

  const grant = new provider.Grant({ accountId, clientId: client.clientId });
  const oidcPart = scopes.filter((s) => oidcScopes.has(s));
  if (oidcPart.length) grant.addOIDCScope(oidcPart.join(' '));
  grant.addResourceScope(audience, scope);
  const grantId = await grant.save();

  const at = new provider.AccessToken({
    accountId,
    client,
    grantId,
    gty: 'client_credentials',
  });
  at.resourceServer = new provider.ResourceServer(audience, resourceServerInfo());
  at.scope = scope || undefined;
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();

  let refreshToken;
  if (scopes.includes('offline_access')) {
    const rt = new provider.RefreshToken({
      accountId,
      client,
      grantId,
      gty: 'client_credentials',
      resource: audience,
      rotations: 0,
      scope,
    });
    ctx.oidc.entity('RefreshToken', rt);
    refreshToken = await rt.save();
  }

  ctx.body = Object.fromEntries(Object.entries({
    access_token: accessToken,
    expires_in: at.expiration,
    refresh_token: refreshToken,
    refresh_expires_in: refreshToken ? cfg.refresh_token_ttl : undefined,
    scope: scope || undefined,
    token_type: at.tokenType,
  }).filter(([, v]) => v !== undefined));
}

// ------------------------------------------------------ refresh_token grant
// The built-in handler, but a `scope` parameter is narrowed to what the
// refresh token holds instead of failing with invalid_scope (authlib re-sends
// the session's scope on refresh; Keycloak accepts that).
const boundHelpers = Object.fromEntries(
  Object.entries(grantHelpers).map(([name, fn]) => [name, fn.bind(undefined, provider)]),
);
async function refreshTokenHandler(ctx) {
  const { scope, refresh_token: value } = ctx.oidc.params;
  if (scope && typeof value === 'string') {
    const rt = await provider.RefreshToken.find(value, { ignoreExpiration: true });
    if (rt) {
      const held = rt.scopes;
      const kept = scope.split(' ').filter((s) => held.has(s));
      ctx.oidc.params.scope = kept.length ? kept.join(' ') : undefined;
    }
  }
  return refreshGrant.handler(provider, boundHelpers, ctx);
}

// ------------------------------------------ token exchange grant (RFC 8693)
// A service client registered with an `exchange_audience` may present a
// user's access token addressed to that audience (Keycloak's "standard token
// exchange" asks the same: the requesting client is in the subject token's
// aud) and receive a JWT access token for the API with the same subject and
// the scopes it asks for, narrowed to those the presented token holds.
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const JWT_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:jwt';

async function tokenExchangeHandler(ctx) {
  const { client, params } = ctx.oidc;
  const serviceAudience = exchangeAudiences.get(client.clientId);
  if (!serviceAudience) throw new errors.UnauthorizedClient('this client may not exchange tokens');
  if (![ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE].includes(params.subject_token_type)) {
    throw new errors.InvalidRequest('subject_token_type must name an access token');
  }
  if (params.requested_token_type && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest('only access tokens can be requested');
  }
  if (params.actor_token) throw new errors.InvalidRequest('actor tokens are not supported');
  const target = params.resource || params.audience || audience;
  if (target !== audience) throw new errors.InvalidTarget();
  const subject = verifyAccessToken(String(params.subject_token || ''))
    || await opaqueAccessToken(String(params.subject_token || ''));
  if (!subject || !usersBySub.get(subject.sub)) {
    throw new errors.InvalidGrant('the subject token is not a valid user token of this issuer');
  }
  const audiences = Array.isArray(subject.aud) ? subject.aud : [subject.aud];
  if (!audiences.includes(serviceAudience)) {
    throw new errors.InvalidGrant('the subject token is not addressed to this client');
  }
  const held = new Set(String(subject.scope || '').split(' ').filter(Boolean));
  const requested = params.scope ? params.scope.split(' ').filter(Boolean) : [...held];
  const scopes = [...new Set(requested.filter((s) => held.has(s) && apiScopes.has(s)))];
  const scope = scopes.join(' ');
  const accountId = subject.sub;

  const grant = new provider.Grant({ accountId, clientId: client.clientId });
  const oidcPart = scopes.filter((s) => oidcScopes.has(s));
  if (oidcPart.length) grant.addOIDCScope(oidcPart.join(' '));
  grant.addResourceScope(audience, scope);
  const grantId = await grant.save();

  const at = new provider.AccessToken({ accountId, client, grantId, gty: 'token_exchange' });
  at.resourceServer = new provider.ResourceServer(audience, resourceServerInfo());
  at.scope = scope || undefined;
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();
  ctx.body = Object.fromEntries(Object.entries({
    access_token: accessToken,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: at.expiration,
    scope: scope || undefined,
  }).filter(([, v]) => v !== undefined));
}

provider.registerGrantType(
  TOKEN_EXCHANGE,
  tokenExchangeHandler,
  ['subject_token', 'subject_token_type', 'requested_token_type', 'actor_token',
    'actor_token_type', 'audience', 'resource', 'scope'],
  ['resource', 'audience'],
);
provider.registerGrantType('client_credentials', clientCredentialsHandler, ['scope', 'resource'], ['resource']);
provider.registerGrantType(
  'refresh_token',
  refreshTokenHandler,
  [...refreshGrant.parameters, 'resource'],
  ['resource'],
);

// ------------------------------------------------ logging, counting, stats
const stats = { total: 0, by_path: {} };

provider.use(async (ctx, next) => {
  const key = `${ctx.method} ${ctx.path}`;
  const internal = ctx.path.startsWith('/__devstack/');
  if (!internal) {
    stats.total += 1;
    stats.by_path[key] = (stats.by_path[key] || 0) + 1;
  }
  try {
    await next();
  } finally {
    process.stderr.write(`idp ${ctx.method} ${ctx.path} ${ctx.status}\n`);
  }
});

provider.use(async (ctx, next) => {
  if (ctx.path === '/__devstack/stats' && ctx.method === 'GET') {
    ctx.set('cache-control', 'no-store');
    ctx.body = stats;
    return undefined;
  }
  if (ctx.path === '/__devstack/stats/reset' && ctx.method === 'POST') {
    stats.total = 0;
    stats.by_path = {};
    ctx.status = 204;
    return undefined;
  }
  return next();
});

provider.use(interactionRoutes);

// ------------------------------------------------- userinfo for JWT tokens
// oidc-provider's userinfo only accepts opaque tokens without an audience,
// and every token here is a JWT for the API (defaultResource). Keycloak's
// userinfo accepts its access tokens, so answer /me for our JWTs here; other
// bearer values fall through to oidc-provider.
const signingKey = createPublicKey({
  key: { kty: cfg.jwk.kty, n: cfg.jwk.n, e: cfg.jwk.e },
  format: 'jwk',
});
const SCOPE_CLAIMS = {
  profile: ['preferred_username', 'name', 'given_name', 'family_name', 'groups'],
  email: ['email', 'email_verified'],
};

function verifyAccessToken(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString('utf8'));
    if (header.alg !== 'RS256' || header.typ !== 'at+jwt') return undefined;
    const signed = Buffer.from(`${parts[0]}.${parts[1]}`);
    if (!cryptoVerify('RSA-SHA256', signed, signingKey, Buffer.from(parts[2], 'base64url'))) {
      return undefined;
    }
    const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    if (payload.iss !== cfg.issuer || !(payload.exp > Date.now() / 1000)) return undefined;
    return payload;
  } catch {
    return undefined;
  }
}

// The claims of a valid opaque access token of this issuer, as a JWT would hold them.
async function opaqueAccessToken(value) {
  if (!value || value.includes('.')) return undefined;
  const at = await provider.AccessToken.find(value);
  if (!at || !at.isValid || !at.accountId) return undefined;
  return { sub: at.accountId, aud: at.aud, scope: at.scope };
}

provider.use(async (ctx, next) => {
  if (ctx.path !== '/me' || !['GET', 'POST'].includes(ctx.method)) return next();
  const match = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/.exec(ctx.get('authorization'));
  if (!match) return next();
  ctx.set('cache-control', 'no-store');
  const payload = verifyAccessToken(match[1]);
  const scopes = new Set((payload?.scope || '').split(' '));
  const claims = payload && claimsForAccount(payload.sub);
  if (!payload || !claims) {
    ctx.status = 401;
    ctx.set('www-authenticate', 'Bearer error="invalid_token", error_description="invalid token provided"');
    ctx.body = { error: 'invalid_token', error_description: 'invalid token provided' };
    return undefined;
  }
  if (!scopes.has('openid')) {
    ctx.status = 403;
    ctx.set('www-authenticate', 'Bearer error="insufficient_scope", scope="openid"');
    ctx.body = { error: 'insufficient_scope', error_description: 'access token missing \'openid\' scope' };
    return undefined;
  }
  const body = { sub: claims.sub };
  for (const [scope, names] of Object.entries(SCOPE_CLAIMS)) {
    if (!scopes.has(scope)) continue;
    for (const name of names) {
      if (claims[name] !== undefined) body[name] = claims[name];
    }
  }
  ctx.body = body;
  return undefined;
});

provider.on('server_error', (ctx, err) => {
  process.stderr.write(`idp server_error ${ctx.method} ${ctx.path}: ${err && err.stack}\n`);
});

const server = provider.listen(cfg.port, '127.0.0.1', () => {
  process.stderr.write(`idp listening ${cfg.issuer}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
