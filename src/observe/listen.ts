// Listening as kube-proxy's Go servers do: a wildcard address ("", 0.0.0.0) is both families, on
// one dual-stack socket ([::] with IPv4-mapped addresses), so a load balancer probing the node's
// IPv6 address gets the same answer as one probing its IPv4 address. A host without IPv6 gets
// IPv4 only. Any other address is that address only.

import type { Server } from 'node:net';

function listenOnce(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    server.once('error', onError);
    server.listen({ port, host, ipv6Only: false }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/** Rejects with the listen error (EADDRINUSE, EACCES, ...). */
export async function listenOn(server: Server, port: number, host: string): Promise<void> {
  if (host !== '' && host !== '0.0.0.0') return listenOnce(server, port, host);
  try {
    await listenOnce(server, port, '::');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // No IPv6 on this host (disabled, or no such address family): IPv4 alone.
    if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') throw e;
    await listenOnce(server, port, '0.0.0.0');
  }
}
