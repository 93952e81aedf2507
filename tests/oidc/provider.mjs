// Minimal real OpenID Connect provider for tests (npm package oidc-provider).
// Copied from the project's reference services; started by tests/src/lib.rs (OidcProvider).
// Usage: node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
// Its dev interactions accept any login name with any password at /interaction/<uid>
// (POST prompt=login&login=NAME&password=x, then POST prompt=consent).
// Every account NAME has the verified email NAME@example.org (group
// invitations by email are claimed with it) and preferred_username NAME.
import Provider from 'oidc-provider';
const [port = '3000', clientId = 'lattice', secret = 'secret', redirect = 'http://127.0.0.1:8080/cb'] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{ client_id: clientId, client_secret: secret, redirect_uris: [redirect],
              grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] }],
  pkce: { required: () => true },
  // Put the scopes' claims in the ID token itself, as Keycloak, Google and
  // most providers do (oidc-provider's default keeps them for userinfo).
  conformIdTokenClaims: false,
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username'] },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: `${id}@example.org`, email_verified: true, preferred_username: id }),
  }),
});
provider.listen(Number(port), '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
