// The floor for scenario 1 (`bench/run.mjs --floor`): the least a user-space HTTP proxy in Node can
// do on this machine. It forwards an absolute-form GET to its origin and pipes the response back:
// no inspection, no spool, no hashing, default stream sizes. Prints its port on stdout.
import http from 'node:http';

const agent = new http.Agent({ keepAlive: true });
const server = http.createServer((req, res) => {
  const url = new URL(req.url);
  const up = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method: req.method, headers: req.headers, agent }, (r) => {
    res.writeHead(r.statusCode ?? 502, r.headers);
    r.pipe(res);
  });
  up.on('error', () => res.destroy());
  req.pipe(up);
});
server.keepAliveTimeout = 30_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
