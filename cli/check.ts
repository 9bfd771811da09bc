// placeholder replaced below
export function runChecks(_bridge: string): number {
  return 1;
}
