// rendernet's service worker: the gate every file of the app passes before it runs, and the offline copy.
// build.py fills in the version (a hash of every file) and the bundle: each file's URL and sha256 (the page's is
// null: index.html is the root of trust, it carries this file's sha256). Every file but the page lives in a folder
// named by its content's hash, so a URL never changes meaning: those are served from the cache, where a file is
// only put once it matches the build's sha256. The page itself is fetched from the network first (revalidated,
// so a redeploy is seen on the next load) and from the cache when offline.
//
// Messages: to every window of the site, {type: "progress", version, done, total} while it installs and
// {type: "failed", version, message} (naming the file) when it cannot, or when a file missing from the cache later
// fails its check again; a {type: "version"} message sent with a
// MessagePort is answered on the port with this version.
const VERSION = "__VERSION__";
const SITE = `rendernet-${self.registration.scope}-`; // caches are per origin: two sites of one origin keep their own
const CACHE = `${SITE}${VERSION}`;
const BUNDLE = __BUNDLE__;
const CHECKED = new Map(Object.entries(BUNDLE).map(([url, sha256]) => [new URL(url, self.registration.scope).href, [url, sha256]]));
const PAGE = "./";
const NETWORK_TIMEOUT_MS = 4000; // a page load waits no longer than this for a slow network before using the cache

const hex = (buffer) => [...new Uint8Array(buffer)].map((byte) => byte.toString(16).padStart(2, "0")).join("");

async function tell(message) {
  for (const client of await self.clients.matchAll({ type: "window", includeUncontrolled: true })) {
    client.postMessage({ ...message, version: VERSION });
  }
}

// One file for the new cache, from the first source whose copy matches the build's sha256: an older cache, the
// HTTP cache (safe for folders named by their content), then the network past every cache. If none matches, the
// install fails, saying which file and why, and the old version (if any) stays in charge.
async function verified(url, sha256) {
  const sources = sha256 === null ? [() => fetch(url, { cache: "no-cache" })]  // the page: this version's, as served
    : [() => caches.match(url), () => fetch(url), () => fetch(url, { cache: "reload" })];
  let problem = "could not be fetched";
  for (const source of sources) {
    const response = await source().catch(() => null);
    if (!response) continue;
    if (!response.ok) {
      problem = `is missing (HTTP ${response.status})`;
    } else if (sha256 === null || hex(await crypto.subtle.digest("SHA-256", await response.clone().arrayBuffer())) === sha256) {
      return response;
    } else {
      problem = "does not match the build's sha256 (altered, or from another version of the site)";
    }
    // A response left unread holds the HTTP cache's lock on its URL: the next source's fetch would wait on it
    // (a deploy caught half-way hung the install at "Checking the app's files").
    await response.body?.cancel();
  }
  throw new Error(`${url.replace(/^\.\//, "") || "index.html"} ${problem}`);
}

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const entries = Object.entries(BUNDLE);
    let done = 0;
    try {
      const responses = await Promise.all(entries.map(([url, sha256]) => verified(url, sha256).then((response) => {
        done += 1;
        tell({ type: "progress", done, total: entries.length });
        return response;
      })));
      const cache = await caches.open(CACHE);
      await Promise.all(entries.map(([url], index) => cache.put(url, responses[index])));
    } catch (error) {
      await caches.delete(CACHE);
      await tell({ type: "failed", message: error.message });
      throw error;
    }
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((name) => name.startsWith(SITE) && name !== CACHE)
        .map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("message", (event) => {
  if (event.data && event.data.type === "version" && event.ports[0]) event.ports[0].postMessage(VERSION);
});

async function page(request) {
  const cached = () => caches.open(CACHE).then((cache) => cache.match(PAGE));
  const network = fetch(request.url, { cache: "no-cache", credentials: "same-origin" });
  const timeout = new Promise((resolve) => setTimeout(resolve, NETWORK_TIMEOUT_MS));
  try {
    const response = await Promise.race([network, timeout]);
    if (response && response.ok) return response;
  } catch (error) {
    // offline: fall through to the cached page
  }
  return (await cached()) || network;
}

self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET") return;
  if (event.request.mode === "navigate") {
    event.respondWith(page(event.request));
    return;
  }
  event.respondWith(app(event.request));
});

// A file of the app from the checked cache; one missing from it (evicted, its cache deleted) is fetched and checked
// against the build's sha256 again before it is served, or not served at all: nothing unchecked runs. Requests
// for anything else (not part of this build) go to the network.
async function app(request) {
  const cache = await caches.open(CACHE);
  const hit = await cache.match(request, { ignoreSearch: true });
  if (hit) return hit;
  const address = new URL(request.url);
  address.search = "";
  const entry = CHECKED.get(address.href);
  if (!entry || entry[1] === null) return fetch(request);
  try {
    const response = await verified(...entry);
    await cache.put(entry[0], response.clone());
    return response;
  } catch (error) {
    await tell({ type: "failed", message: error.message });
    return new Response(`${error.message}: not served`, { status: 503, statusText: "Not verified" });
  }
}
