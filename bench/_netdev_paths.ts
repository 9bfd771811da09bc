// The Netdev paths bench:netdev measures, shared by bench/netdev.ts and its worker (which runs
// its benchmark at import, so the list cannot live there).

/** The ways a program receives (rx) or sends (tx) frames with a Netdev, as a user writes them. */
export const PATHS = {
  rx: ["listen()", "for await", "frames({reuse})", "readable", "batches()"],
  tx: ["send()", "write()", "writable", "writeBatch()"],
} as const;

/** One of {@linkcode PATHS}. */
export type NetdevPath = (typeof PATHS)["rx" | "tx"][number];
