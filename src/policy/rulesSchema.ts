/** JSON Schema of the rules file (YAML). docs/rules.md documents every key. */
const pinned = {
  type: 'object',
  additionalProperties: false,
  properties: {
    file: { type: 'string', minLength: 1, description: 'PEM or DER certificate, relative to the rules file' },
    sha256: { type: 'string', pattern: '^[0-9A-Fa-f: ]+$', description: 'SHA-256 of the DER certificate' },
    name: { type: 'string' },
    note: { type: 'string' },
  },
  anyOf: [{ required: ['file'] }, { required: ['sha256'] }],
} as const;

const portList = { type: 'array', uniqueItems: true, items: { type: 'integer', minimum: 1, maximum: 65535 } } as const;
/** A channel's anchors: the rules' own (`rules`), none at all (`none`), or a list of its own. */
const channelAnchors = { anyOf: [{ enum: ['rules', 'none'] }, { type: 'array', items: pinned }] } as const;

export const RULES_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['version', 'anchors'],
  properties: {
    version: { const: 1 },
    description: { type: 'string' },
    anchors: { type: 'array', items: pinned },
    tsaAnchors: { type: 'array', items: pinned },
    ctlAnchors: { type: 'array', items: pinned },
    channels: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'hosts'],
        properties: {
          name: { type: 'string', minLength: 1 },
          hosts: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
          paths: { type: 'array', items: { type: 'string', minLength: 1 } },
          anchors: channelAnchors,
          ctlAnchors: channelAnchors,
          nonPayload: { enum: ['pass', 'block'] },
          note: { type: 'string' },
        },
      },
    },
    distrust: { type: 'array', items: pinned },
    distrustFiles: { type: 'array', items: { type: 'string', minLength: 1 } },
    policy: {
      type: 'object',
      additionalProperties: false,
      properties: {
        allowSha1: { type: 'boolean' },
        ekuMode: { enum: ['strict', 'nested'] },
        signatureMode: { enum: ['primary', 'best', 'all'] },
        minRsaBits: { type: 'integer', minimum: 1024, maximum: 16384 },
        fileDigests: { type: 'array', minItems: 1, uniqueItems: true, items: { enum: ['sha256', 'sha384', 'sha512'] } },
      },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      properties: {
        maxPayloadBytes: { type: 'integer', minimum: 0 },
        maxSignatureBytes: { type: 'integer', minimum: 1024 },
        maxHeaderBytes: { type: 'integer', minimum: 4096 },
        upstreamIdleTimeoutMs: { type: 'integer', minimum: 1 },
        totalTimeoutMs: { type: 'integer', minimum: 1 },
        memoryHoldBytes: { type: 'integer', minimum: 0 },
        cacheTtlMs: { type: 'integer', minimum: 0 },
        maxSpoolBytes: { type: 'integer', minimum: 0 },
        maxSpoolBytesPerClient: { type: 'integer', minimum: 0 },
        tunnelIdleTimeoutMs: { type: 'integer', minimum: 1000 },
        requestHeadTimeoutMs: { type: 'integer', minimum: 100 },
      },
    },
    hosts: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['pattern', 'mode'],
        properties: {
          pattern: { type: 'string', minLength: 1 },
          mode: { enum: ['inspect', 'pinned', 'pass'] },
          paths: { type: 'array', items: { type: 'string', minLength: 1 } },
          ports: { oneOf: [{ const: 'any' }, portList] },
          source: { type: 'string' },
        },
      },
    },
    nonPayload: { enum: ['pass', 'block'] },
    unsignedDeltas: { enum: ['pass', 'block'] },
    unverifiable: {
      type: 'array',
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'paths', 'action'],
        properties: {
          name: { type: 'string', minLength: 1 },
          paths: { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
          action: { enum: ['pass', 'block'] },
          note: { type: 'string' },
        },
      },
    },
    clients: { type: 'array', items: { type: 'string', minLength: 1 } },
    passThrough: { enum: ['forward', 'deny'] },
    ports: {
      type: 'object',
      additionalProperties: false,
      properties: { connect: portList, http: portList },
    },
    inspectAddresses: { type: 'boolean' },
    audit: {
      type: 'object',
      additionalProperties: false,
      properties: { onError: { enum: ['block', 'serve'] } },
    },
  },
} as const;
