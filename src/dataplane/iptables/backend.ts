// Which iptables backend the node already uses, legacy (x_tables) or nft, decided the way
// kubernetes-sigs/iptables-wrappers decides it, so Rudder writes its rules where kubelet and the
// CNI plugin write theirs (rules split across both backends are evaluated in both, in an order
// nobody controls).
//
// The wrapper's last shell version (and, for steps 1-2, its Go rewrite):
//   1. kubelet's KUBE-IPTABLES-HINT / KUBE-KUBELET-CANARY chain in iptables-nft-save -t mangle
//      (or ip6tables-nft-save -t mangle)                                          -> nft
//   2. the same chains anywhere in iptables-legacy-save / ip6tables-legacy-save
//      (never "-t mangle" with legacy: that would create the table)               -> legacy
//   3. otherwise count rule lines ("^-") of both: legacy strictly more           -> legacy
//      else (including a tie, and nothing anywhere)                               -> nft
// (The 2020 installer used ">=" in step 3 and so chose legacy on an empty node; the wrapper has
// defaulted to nft since, and so does Rudder.) Errors of the save tools count as empty output.

import type { ExecFn } from '../../util/exec.js';
import type { Logger } from '../../observe/log.js';

export type IptablesBackend = 'legacy' | 'nft';

export type { ExecFn };

export interface BackendTools {
  restore: string;
  save: string;
}

export function toolsFor(backend: IptablesBackend, family: 4 | 6 = 4): BackendTools {
  const cmd = family === 4 ? 'iptables' : 'ip6tables';
  return { restore: `${cmd}-${backend}-restore`, save: `${cmd}-${backend}-save` };
}

const KUBELET_CHAINS = /^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\b/m;

function ruleLines(text: string): number {
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('-')) n++;
  return n;
}

async function output(exec: ExecFn, argv: readonly string[]): Promise<string> {
  try {
    const r = await exec(argv, { timeoutMs: 10_000 });
    return r.code === 0 ? r.stdout : '';
  } catch {
    return ''; // tool missing, or hung: treated as "no rules", as the wrapper does.
  }
}

export interface Detection {
  backend: IptablesBackend;
  reason: string;
}

/** Detects the backend in use; never throws. Logs one info line naming the choice and why. */
export async function detectBackend(exec: ExecFn, logger: Logger): Promise<Detection> {
  const d = await detect(exec);
  logger.info('iptables backend selected', { backend: d.backend, reason: d.reason });
  return d;
}

async function detect(exec: ExecFn): Promise<Detection> {
  for (const tool of ['iptables-nft-save', 'ip6tables-nft-save']) {
    if (KUBELET_CHAINS.test(await output(exec, [tool, '-t', 'mangle']))) {
      return { backend: 'nft', reason: `kubelet's hint chain found by ${tool} -t mangle` };
    }
  }
  const legacy = [await output(exec, ['iptables-legacy-save']), await output(exec, ['ip6tables-legacy-save'])];
  for (const [i, text] of legacy.entries()) {
    if (KUBELET_CHAINS.test(text)) {
      return { backend: 'legacy', reason: `kubelet's hint chain found by ${i === 0 ? 'iptables' : 'ip6tables'}-legacy-save` };
    }
  }
  const legacyRules = legacy.reduce((n, t) => n + ruleLines(t), 0);
  const nftRules = ruleLines(await output(exec, ['iptables-nft-save'])) + ruleLines(await output(exec, ['ip6tables-nft-save']));
  if (legacyRules > nftRules) {
    return { backend: 'legacy', reason: `no kubelet hint chain; legacy has more rules (${legacyRules} vs ${nftRules} nft)` };
  }
  return {
    backend: 'nft',
    reason: legacyRules === 0 && nftRules === 0
      ? 'no kubelet hint chain and no rules in either backend: nft by default'
      : `no kubelet hint chain; nft has at least as many rules (${nftRules} vs ${legacyRules} legacy)`,
  };
}
