// rendernet offline cache: cache-first over the bundle, filled at install time.
// build.py fills in the version (a hash of every file) and the file list.
const CACHE = "rendernet-__VERSION__";
const BUNDLE = __BUNDLE__;

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(BUNDLE)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((name) => name.startsWith("rendernet-") && name !== CACHE)
        .map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  if (event.request.method !== "GET") return;
  event.respondWith(
    caches.open(CACHE).then((cache) => cache.match(event.request, { ignoreSearch: true })
      .then((hit) => hit || fetch(event.request))),
  );
});
