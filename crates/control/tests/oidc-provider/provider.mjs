// A real OpenID provider for pinhole's tests: `oidc-provider` (a certified implementation) with a
// confidential client for pinhole-control, a small directory of people and a plain sign-in page
// of our own (the package's development pages load fonts from the internet; this one loads
// nothing). Nothing here is pinhole code under test: it is the counterpart.
//
// Environment: OIDC_HOST (default 127.0.0.1), OIDC_PORT (default 0: any free port),
// OIDC_CLIENT_ID (default pinhole), OIDC_CLIENT_SECRET, OIDC_REDIRECT_URIS (comma-separated).
// Prints one JSON line {"issuer": ..., "version": ...} once it listens; stops on SIGTERM.
//
// People (any non-empty password):
//   alice@example.com  groups [dev]
//   bob@example.com    groups [ops]
//   carol@example.com  email not verified
//   forger@example.com its ID tokens leave with a broken signature (the token response is
//                      altered on its way out, as a man in the middle would)

import http from 'node:http';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const host = process.env.OIDC_HOST || '127.0.0.1';
const port = Number(process.env.OIDC_PORT || 0);
const clientId = process.env.OIDC_CLIENT_ID || 'pinhole';
const clientSecret = process.env.OIDC_CLIENT_SECRET;
const redirectUris = (process.env.OIDC_REDIRECT_URIS || '').split(',').filter(Boolean);
if (!clientSecret || redirectUris.length === 0) {
  console.error('OIDC_CLIENT_SECRET and OIDC_REDIRECT_URIS are required');
  process.exit(2);
}
const version = JSON.parse(
  readFileSync(new URL('./node_modules/oidc-provider/package.json', import.meta.url)),
).version;

const people = {
  'alice@example.com': { email_verified: true, groups: ['dev'] },
  'bob@example.com': { email_verified: true, groups: ['ops'] },
  'carol@example.com': { email_verified: false, groups: [] },
  'forger@example.com': { email_verified: true, groups: [], forge: true },
};

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(uid, error) {
  const err = error ? `<p role="alert" class="error">${escape(error)}</p>` : '';
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Example IdP sign-in</title>
<style>body{font-family:sans-serif;max-width:22rem;margin:4rem auto}label,input,button{display:block;width:100%;margin:.4rem 0}.error{color:#b00020}</style></head>
<body><main><h1>Example IdP</h1>${err}
<form method="post" action="/interaction/${escape(uid)}/login">
<label for="login">Email</label><input id="login" name="login" type="email" autocomplete="username" required>
<label for="password">Password</label><input id="password" name="password" type="password" required>
<button type="submit" id="idp-submit">Sign in</button></form></main></body></html>`;
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
      if (body.length > 10000) reject(new Error('form too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

const server = http.createServer();
server.listen(port, host, () => {
  const issuer = `http://${host}:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    cookies: { keys: ['a test-only cookie key, never used outside tests'] },
    features: { devInteractions: { enabled: false } },
    pkce: { required: () => true },
    ttl: { IdToken: 60, AccessToken: 600, AuthorizationCode: 60, Grant: 600, Interaction: 600, Session: 600 },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    // No consent screen: the organisation's own client is trusted with what it asks for.
    async loadExistingGrant(ctx) {
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope(ctx.oidc.requestParamScopes ? [...ctx.oidc.requestParamScopes].join(' ') : 'openid');
      await grant.save();
      return grant;
    },
    async findAccount(ctx, sub) {
      const who = people[sub];
      if (!who) return undefined;
      return {
        accountId: sub,
        async claims() {
          return { sub, email: sub, email_verified: who.email_verified, groups: who.groups, name: sub.split('@')[0] };
        },
      };
    },
  });

  provider.use(async (ctx, next) => {
    await next();
    if (ctx.path === '/token' && ctx.body && typeof ctx.body.id_token === 'string') {
      const [h, p, s] = ctx.body.id_token.split('.');
      const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
      if (people[claims.sub]?.forge) {
        const sig = Buffer.from(s, 'base64url');
        sig[0] ^= 0xff;
        ctx.body = { ...ctx.body, id_token: `${h}.${p}.${sig.toString('base64url')}` };
      }
    }
  });

  const oidc = provider.callback();
  server.on('request', async (req, res) => {
    const m = req.url.match(/^\/interaction\/([A-Za-z0-9_-]+)(\/login)?$/);
    if (!m) return oidc(req, res);
    try {
      const details = await provider.interactionDetails(req, res);
      if (!m[2]) {
        res.setHeader('content-type', 'text/html; charset=utf-8');
        res.setHeader('cache-control', 'no-store');
        return res.end(page(details.uid));
      }
      const form = await readForm(req);
      const login = (form.get('login') || '').trim().toLowerCase();
      if (!people[login] || !form.get('password')) {
        res.statusCode = 401;
        res.setHeader('content-type', 'text/html; charset=utf-8');
        return res.end(page(details.uid, 'Unknown email or empty password.'));
      }
      return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
    } catch (e) {
      res.statusCode = 400;
      res.setHeader('content-type', 'text/plain; charset=utf-8');
      return res.end(`interaction failed: ${e.message}`);
    }
  });
  console.log(JSON.stringify({ issuer, version }));
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
