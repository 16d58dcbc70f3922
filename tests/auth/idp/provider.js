// A real OpenID Connect provider for Costlake's sign-in tests (oidc-provider, development interactions).
//
// Started by tests/auth/conftest.py: IDP_PORT, IDP_CLIENT_ID, IDP_CLIENT_SECRET and IDP_REDIRECT_URI come from
// the environment (the app's /oauth2callback; Streamlit also sends it as the post-logout redirect). The
// accounts are static: the dev login form takes an address as the login (any password) and the ID token
// carries that account's email, name and groups claims.
import Provider from "oidc-provider";

const port = Number(process.env.IDP_PORT);
const issuer = `http://127.0.0.1:${port}`;
const redirect = process.env.IDP_REDIRECT_URI;

const ACCOUNTS = {
  "viewer@example.com": { name: "Vera Viewer", groups: [] },
  "editor@example.com": { name: "Ed Editor", groups: ["staff"] },
  "admin@example.com": { name: "Ada Admin", groups: ["staff", "costlake-admins"] },
  "outsider@elsewhere.test": { name: "Otto Outsider", groups: ["unrelated"] },
};

const configuration = {
  clients: [
    {
      client_id: process.env.IDP_CLIENT_ID,
      client_secret: process.env.IDP_CLIENT_SECRET,
      redirect_uris: [redirect],
      post_logout_redirect_uris: [redirect],
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
  ],
  async findAccount(ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: id, email_verified: true, name: account.name, groups: account.groups };
      },
    };
  },
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name"],
    groups: ["groups"],
  },
  scopes: ["openid", "email", "profile", "groups"],
  // Streamlit keeps the ID token's claims as st.user: they must be in the ID token, not only at userinfo.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  // Fixed only for this throw-away test provider: it signs its own session cookies, nothing else.
  cookies: { keys: ["costlake-test-idp-cookie-key-not-a-secret"] },
};

const provider = new Provider(issuer, configuration);
// Plain http on 127.0.0.1: allowed in oidc-provider's development mode (NODE_ENV is not production).
provider.listen(port, "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
