// The server that runs inside a lab pod namespace (started by servers.ts through `ip netns exec`).
//
//   node podserver.js --name <pod> --port 8080 [--port 8081 ...] [--udp-port 5300 ...]
//
// HTTP on every --port answers any request with {"pod","client","clientPort","port"}: the pod's
// name, the peer address and port it saw, and the local port that took the connection. UDP on
// every --udp-port answers each datagram with the same fields plus "payload" (the datagram text).
// Prints one JSON line {"ready":true,...} on stdout once every socket listens; exits when its
// stdin closes, so a server never outlives the lab process that started it.

import { createServer } from 'node:http';
import { createSocket } from 'node:dgram';

interface Args {
  name: string;
  ports: number[];
  udpPorts: number[];
}

function parseArgs(argv: string[]): Args {
  const out: Args = { name: '', ports: [], udpPorts: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    i++;
    if (flag === '--name') out.name = value;
    else if (flag === '--port') out.ports.push(toPort(value));
    else if (flag === '--udp-port') out.udpPorts.push(toPort(value));
    else throw new Error(`unknown flag ${flag}`);
  }
  if (out.name === '') throw new Error('--name is required');
  return out;
}

function toPort(s: string): number {
  const p = Number(s);
  if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`bad port ${s}`);
  return p;
}

function listenHttp(pod: string, port: number): Promise<void> {
  const server = createServer((req, res) => {
    req.resume();
    const body = JSON.stringify({ pod, client: req.socket.remoteAddress, clientPort: req.socket.remotePort, port: req.socket.localPort });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '0.0.0.0', () => resolve());
  });
}

function listenUdp(pod: string, port: number): Promise<void> {
  const sock = createSocket('udp4');
  sock.on('message', (msg, rinfo) => {
    const reply = JSON.stringify({ pod, client: rinfo.address, clientPort: rinfo.port, port, payload: msg.toString('utf8') });
    sock.send(reply, rinfo.port, rinfo.address);
  });
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, '0.0.0.0', () => resolve());
  });
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  await Promise.all([...args.ports.map((p) => listenHttp(args.name, p)), ...args.udpPorts.map((p) => listenUdp(args.name, p))]);
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('error', () => process.exit(0));
  process.stdin.resume();
  process.stdout.write(JSON.stringify({ ready: true, pod: args.name, ports: args.ports, udpPorts: args.udpPorts }) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`podserver: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
