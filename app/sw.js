// rendernet offline cache. build.py fills in the version (a hash of every file) and the bundle: each file's URL
// and sha256. Every file but the page lives in a folder named by its content's hash, so a URL never changes
// meaning: those are served cache-first. The page itself is fetched from the network first (revalidated, so a
// redeploy is seen on the next load) and from the cache when offline.
const CACHE = "rendernet-__VERSION__";
const BUNDLE = __BUNDLE__;
const PAGE = "./";
const NETWORK_TIMEOUT_MS = 4000; // a page load waits no longer than this for a slow network before using the cache

const hex = (buffer) => [...new Uint8Array(buffer)].map((byte) => byte.toString(16).padStart(2, "0")).join("");

// One file for the new cache, from the first source whose copy matches the build's sha256: an older cache, the
// HTTP cache (safe for folders named by their content), then the network past every cache. If none matches, the
// install fails and the old version stays in charge.
async function verified(url, sha256) {
  const sources = [() => caches.match(url), () => fetch(url), () => fetch(url, { cache: "reload" })];
  for (const source of sources) {
    const response = await source().catch(() => null);
    if (response && response.ok
        && hex(await crypto.subtle.digest("SHA-256", await response.clone().arrayBuffer())) === sha256) {
      return response;
    }
  }
  throw new Error(`${url} is missing or does not match the build's sha256`);
}

self.addEventListener("install", (event) => {
  event.waitUntil((async () => {
    const responses = await Promise.all(Object.entries(BUNDLE).map(([url, sha256]) => verified(url, sha256)));
    const cache = await caches.open(CACHE);
    await Promise.all(Object.keys(BUNDLE).map((url, index) => cache.put(url, responses[index])));
    await self.skipWaiting();
  })());
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((name) => name.startsWith("rendernet-") && name !== CACHE)
        .map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
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
  event.respondWith(
    caches.open(CACHE).then((cache) => cache.match(event.request, { ignoreSearch: true })
      .then((hit) => hit || fetch(event.request))),
  );
});
