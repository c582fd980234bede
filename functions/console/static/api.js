// The mail API, with the signed-in user's ID token. Errors carry the API's {code, message, field}.
import { token } from "./auth.js";

// The API's root: the folder above the console's (the stage, e.g. /v1/, in the cloud).
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `the API answered ${status}`);
    this.status = status;
    this.code = error.code;
    this.field = error.field;
    this.body = body;
  }
}

export function query(parameters) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export async function api(method, path, body, headers = {}) {
  const answer = await fetch(ROOT + path, {
    method,
    headers: {
      Authorization: `Bearer ${token()}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      ...headers,
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await answer.text();
  let parsed = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { error: { message: text } };
  }
  if (!answer.ok) throw new ApiError(answer.status, parsed);
  return parsed;
}

// A file upload through the files API (base64 in JSON) with upload progress.
export function uploadFile(file, team, onProgress) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.onload = () => {
      const content = String(reader.result).split(",", 2)[1] || "";
      const request = new XMLHttpRequest();
      request.open("POST", `${ROOT}/api/core/files`);
      request.setRequestHeader("Authorization", `Bearer ${token()}`);
      request.setRequestHeader("Content-Type", "application/json");
      request.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
      request.onerror = () => reject(new Error(`the upload of ${file.name} failed`));
      request.onload = () => {
        const body = JSON.parse(request.responseText || "{}");
        if (request.status >= 400) reject(new ApiError(request.status, body));
        else {
          onProgress(1);
          resolve(body.file);
        }
      };
      const type = file.type || "application/octet-stream";
      request.send(JSON.stringify({ name: file.name, content_type: type, content, team: team || undefined }));
    };
    reader.readAsDataURL(file);
  });
}
