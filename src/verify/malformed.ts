/** Thrown by parsers for input that is not what it claims to be; the boundary turns it into MALFORMED. */
export class MalformedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MalformedError';
  }
}

/** Runs a parsing step, turning any library error into a MalformedError that names the step. */
export function parsing<T>(what: string, step: () => T): T {
  try {
    return step();
  } catch (err) {
    if (err instanceof MalformedError) throw err;
    throw new MalformedError(`${what}: ${(err as Error)?.message ?? String(err)}`);
  }
}
