// Shared helpers of the two LibreChat client drivers (clients/v*/driver.mjs).
// Imports no npm package: each driver passes in what it loaded from its own
// pinned node project.
//
// Output protocol (read by test/e2e/librechat_test.go): one line per check,
//   E2E-RESULT {"scenario":"…","check":"…","ok":true|false,"details":{…}}
// Anything else on stdout/stderr is the client's own chatter and is only logged.

import { createHash } from 'node:crypto';

export const RESULT_PREFIX = 'E2E-RESULT ';

export function sha256(buf) {
  return createHash('sha256').update(buf).digest('hex');
}

/** Reads the driver's settings from the environment the Go test sets. */
export function readEnv() {
  const base = (process.env.E2E_BASE_URL ?? '').trim();
  if (base === '') throw new Error('E2E_BASE_URL is required');
  const auth = (process.env.E2E_AUTH ?? 'key').trim(); // key | none | wrong
  return {
    base,
    auth,
    apiKey: process.env.E2E_API_KEY ?? '',
    userId: process.env.E2E_USER_ID ?? '65f0a1b2c3d4e5f601234567',
    agentId: process.env.E2E_AGENT_ID ?? 'agent_e2eAbCdEf0123456789',
    longSleepSeconds: Number(process.env.E2E_LONG_SLEEP_SECONDS ?? '40'),
  };
}

/** Collects the checks of one scenario and prints them as they complete. */
export class Reporter {
  constructor(scenario) {
    this.scenario = scenario;
    this.failed = 0;
    this.count = 0;
  }

  emit(check, ok, details = {}) {
    this.count++;
    if (!ok) this.failed++;
    const line = JSON.stringify({ scenario: this.scenario, check, ok: !!ok, details });
    process.stdout.write(`${RESULT_PREFIX}${line}\n`);
    return ok;
  }

  /**
   * Runs one check: fn returns {ok, ...details} or throws. A throw is a
   * failed check carrying the error text (never the whole stack of a
   * library, only its first lines).
   */
  async check(check, fn) {
    const t0 = Date.now();
    try {
      const res = await fn();
      const { ok, ...details } = res ?? {};
      details.ms = Date.now() - t0;
      return this.emit(check, ok === true, details);
    } catch (err) {
      return this.emit(check, false, {
        ms: Date.now() - t0,
        error: errorText(err),
      });
    }
  }
}

export function errorText(err) {
  if (err == null) return String(err);
  const parts = [String(err.message ?? err)];
  if (err.response != null) {
    // axios error: keep the HTTP status and a bounded body
    let body = err.response.data;
    if (Buffer.isBuffer(body)) body = body.toString('utf8');
    else if (body instanceof ArrayBuffer) body = Buffer.from(body).toString('utf8');
    else if (typeof body !== 'string') body = JSON.stringify(body);
    parts.push(`http_status=${err.response.status} body=${String(body).slice(0, 300)}`);
  }
  return parts.join(' | ');
}

/** Deterministic test bytes: every byte value, so a text-mangling server shows. */
export function reportBytes() {
  const head = Buffer.from('codeexec e2e report\nline 2: naïve café ☕\n', 'utf8');
  const all = Buffer.alloc(256);
  for (let i = 0; i < 256; i++) all[i] = i;
  return Buffer.concat([head, all, all, Buffer.from('\r\nend\n')]);
}

/** Python source that writes reportBytes() to path (base64 inside the code). */
export function pyWriteFile(path, bytes) {
  return [
    'import base64, os',
    `data = base64.b64decode("${bytes.toString('base64')}")`,
    'os.makedirs(os.path.dirname(' + JSON.stringify(path) + '), exist_ok=True)',
    `with open(${JSON.stringify(path)}, "wb") as f:`,
    '    f.write(data)',
    'print("written", len(data))',
  ].join('\n');
}

/** Python source that prints "sha256=<hex> len=<n>" of path. */
export function pyHashFile(path) {
  return [
    'import hashlib',
    `data = open(${JSON.stringify(path)}, "rb").read()`,
    'print(f"sha256={hashlib.sha256(data).hexdigest()} len={len(data)}")',
  ].join('\n');
}

export function hashLine(bytes) {
  return `sha256=${sha256(bytes)} len=${bytes.length}`;
}

/** A file id must be URL-safe and free of '.' and '/' (contract §3.6). */
export function goodFileId(id) {
  return typeof id === 'string' && /^[A-Za-z0-9_-]+$/.test(id);
}

export function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content.map((c) => (typeof c === 'string' ? c : c?.text ?? JSON.stringify(c))).join('\n');
  }
  return JSON.stringify(content);
}

/**
 * Whether a tool's content is exactly a clean run that printed stdout: both
 * clients render `stdout:\n${stdout}\n`, then `stderr:\n${stderr}\n` only
 * when stderr is not empty, then notes of their own (files, session,
 * reminders) after a blank line; the whole is trimmed. So the expected
 * stdout must be followed by the end or that blank line, and no stderr
 * section.
 */
export function cleanRun(content, stdout) {
  const head = `stdout:\n${stdout.replace(/\n$/, '')}`;
  if (content === head) return true;
  return content.startsWith(`${head}\n\n`) && !content.slice(head.length + 2).startsWith('stderr:');
}

/** Whether content is a run that printed exactly stdout then a stderr ending with stderrEnd. */
export function failedRun(content, stdout, stderrEnd) {
  const out = stdout.endsWith('\n') ? stdout : `${stdout}\n`;
  const head = `stdout:\n${out}\nstderr:\n`;
  if (!content.startsWith(head)) return false;
  const rest = content.slice(head.length);
  const end = stderrEnd.replace(/\n$/, '');
  const i = rest.indexOf(end);
  return i >= 0 && (rest.length === i + end.length || rest.startsWith('\n', i + end.length));
}

export function clip(s, n = 600) {
  s = String(s ?? '');
  return s.length > n ? `${s.slice(0, n)}…(${s.length} chars)` : s;
}

/** Sample input files used by the upload scenarios. */
export const uploadSamples = {
  csv: {
    filename: 'sales.csv',
    bytes: Buffer.from('region,amount\nnorth,10\nsouth,32\n', 'utf8'),
  },
  batch: [
    { filename: 'notes.txt', bytes: Buffer.from('batch file one\n', 'utf8') },
    { filename: 'config.json', bytes: Buffer.from('{"answer": 42}\n', 'utf8') },
    { filename: 'blob.bin.txt', bytes: reportBytes() },
  ],
};

/** Python that prints "<name> sha256=… len=…" for each file under /mnt/data. */
export function pyHashFiles(names) {
  return [
    'import hashlib',
    `for name in ${JSON.stringify(names)}:`,
    '    data = open("/mnt/data/" + name, "rb").read()',
    '    print(f"{name} sha256={hashlib.sha256(data).hexdigest()} len={len(data)}")',
  ].join('\n');
}

export function expectedHashLines(files) {
  return files.map((f) => `${f.filename} ${hashLine(f.bytes)}`);
}
