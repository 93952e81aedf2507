// Minimal real OpenID Connect provider for tests (npm package oidc-provider).
// Copied from the project's reference services; started by tests/src/lib.rs (OidcProvider).
// Usage: node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
// Its dev interactions accept any login name with any password at /interaction/<uid>
// (POST prompt=login&login=NAME&password=x, then POST prompt=consent).
import Provider from 'oidc-provider';
const [port = '3000', clientId = 'lattice', secret = 'secret', redirect = 'http://127.0.0.1:8080/cb'] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;
const provider = new Provider(issuer, {
  clients: [{ client_id: clientId, client_secret: secret, redirect_uris: [redirect],
              grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] }],
  pkce: { required: () => true },
});
provider.listen(Number(port), '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
