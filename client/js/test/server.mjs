// Test helper: builds cmd/sigil once and starts `sigil serve --demo --addr 127.0.0.1:0`.
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { mkdirSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';

export const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const GO = process.env.GO || (existsSync('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : 'go');

let built;
/** buildSigil compiles cmd/sigil (once per process) and returns the binary path. */
export function buildSigil() {
  if (built) return built;
  const dir = join(tmpdir(), `sigiljs-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  built = join(dir, 'sigil');
  execFileSync(GO, ['build', '-o', built, './cmd/sigil'], { cwd: repo, stdio: ['ignore', 'inherit', 'inherit'] });
  return built;
}

/**
 * startDemo starts `sigil serve --demo --addr 127.0.0.1:0` and resolves with
 * {url, users: {alice: pw, ...}, stop(), log()} once it prints SIGIL_READY.
 */
export function startDemo(extraArgs = []) {
  const bin = buildSigil();
  const child = spawn(bin, ['serve', '--demo', '--addr', '127.0.0.1:0', ...extraArgs], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => {
    err += d;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`sigil did not become ready:\n${out}\n${err}`)), 20_000);
    child.on('exit', (code) => reject(new Error(`sigil exited ${code}:\n${out}\n${err}`)));
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/SIGIL_READY url=(\S+)/);
      if (!m) return;
      clearTimeout(timer);
      const users = {};
      for (const line of out.split('\n')) {
        const u = line.match(/^\s+(\w+)\s+(\S+)\s*$/);
        if (u) users[u[1]] = u[2];
      }
      resolve({
        url: m[1],
        users,
        log: () => err,
        stop: () => new Promise((r) => {
          if (child.exitCode !== null) return r();
          child.removeAllListeners('exit');
          child.on('exit', () => r());
          child.kill('SIGTERM');
        }),
      });
    });
  });
}

/** artifacts is where the browser tests save screenshots (git-ignored). */
export const artifacts = join(repo, 'artifacts');

/**
 * launchChromium starts Debian's chromium (or $CHROMIUM) headless with the
 * project's flags. A missing browser is a failure, never a skip (ci.sh
 * installs it). It also creates the artifacts folder.
 */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  const exe = process.env.CHROMIUM || '/usr/bin/chromium';
  assert.ok(existsSync(exe), `${exe} not found: apt-get install -y chromium`);
  mkdirSync(artifacts, { recursive: true });
  return chromium.launch({
    executablePath: exe,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

// eventually waits until cond() holds, polling every 10 ms; the 30 s limit
// is a safety net that names what was awaited, never the assertion.
export async function eventually(what, cond) {
  const deadline = Date.now() + 30_000;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
