/**
 * Text from the network (certificate subjects, URLs, reason messages quoting them) on its way to
 * an operator's terminal: control characters are shown escaped, never sent. A raw ESC could
 * rewrite the screen or the window title, a CR or LF forge a line ("ALLOW ..."), a bidirectional
 * override reorder what is read, a Unicode line or paragraph separator start a line. JSON output
 * needs none of this: JSON escapes them itself.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

export function forTerminal(text: string): string {
  return text.replace(UNSAFE, (c) => {
    const n = c.charCodeAt(0);
    return n < 0x100 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
  });
}
