// Signing in with the Cognito user pool (USER_PASSWORD_AUTH); the ID token stays in this tab.
const KEY = "mail-console-token";

export async function loadConfig() {
  const answer = await fetch(new URL("config.json", import.meta.url));
  return answer.json();
}

export function token() {
  const stored = sessionStorage.getItem(KEY);
  if (!stored) return null;
  const { idToken, expires } = JSON.parse(stored);
  return Date.now() < expires ? idToken : null;
}

export function user() {
  const idToken = token();
  if (!idToken) return null;
  const payload = JSON.parse(atob(idToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  const groups = payload["cognito:groups"] || [];
  return { email: payload.email || payload["cognito:username"], groups: Array.isArray(groups) ? groups : [groups] };
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

export async function signIn(config, email, password) {
  const answer = await fetch(config.cognito_url, {
    method: "POST",
    headers: {
      "Content-Type": "application/x-amz-json-1.1",
      "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
    },
    body: JSON.stringify({
      AuthFlow: "USER_PASSWORD_AUTH",
      ClientId: config.client_id,
      AuthParameters: { USERNAME: email, PASSWORD: password },
    }),
  });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.message || body.__type || `sign-in failed (${answer.status})`);
  const result = body.AuthenticationResult;
  if (!result) throw new Error(`the user pool asks for ${body.ChallengeName}; finish it elsewhere first`);
  const expires = Date.now() + (result.ExpiresIn - 60) * 1000;
  sessionStorage.setItem(KEY, JSON.stringify({ idToken: result.IdToken, expires }));
}
