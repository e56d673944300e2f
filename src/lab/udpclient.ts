// Sends one UDP datagram and waits for one reply; run inside a lab namespace by Lab.udp.
//
//   node udpclient.js --host <ip> --port <p> --payload <text> --timeout-ms <ms> [--local-port <p>]
//
// Prints one JSON line: {"ok":true,"reply":"<reply text>"} or {"ok":false,"kind":...,"message":...}
// where kind is refused (ICMP port unreachable), unreachable (no route / host unreachable),
// timeout, or error. Always exits 0 unless it crashed, so the caller reads the outcome from stdout.

import { createSocket } from 'node:dgram';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function done(result: object): never {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}

const host = arg('host') ?? '';
const port = Number(arg('port'));
const payload = arg('payload') ?? '';
const timeoutMs = Number(arg('timeout-ms') ?? '2000');
const localPort = arg('local-port');

const sock = createSocket('udp4');
setTimeout(() => done({ ok: false, kind: 'timeout', message: `no reply from ${host}:${port} within ${timeoutMs} ms` }), timeoutMs);
function fail(e: NodeJS.ErrnoException): never {
  const kind = e.code === 'ECONNREFUSED' ? 'refused' : e.code === 'ENETUNREACH' || e.code === 'EHOSTUNREACH' ? 'unreachable' : 'error';
  return done({ ok: false, kind, message: `${host}:${port}: ${e.message}` });
}
sock.on('error', fail);
sock.on('message', (msg) => done({ ok: true, reply: msg.toString('utf8') }));
// A connected socket receives ICMP errors (port unreachable -> ECONNREFUSED) as 'error' events;
// a failed route lookup at connect time comes to the connect callback.
sock.bind(localPort === undefined ? 0 : Number(localPort), () => {
  sock.connect(port, host, (err?: Error) => {
    if (err) fail(err);
    else sock.send(payload);
  });
});
