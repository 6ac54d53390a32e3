import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { atomicWrite } from '../cache/chunk-files.ts';
import type { Logger } from '../telemetry/logger.ts';
import { MAX_CLOCK_SKEW_MS } from '../time/clock.ts';

/** Where this node keeps its last life (a start second, or one past the life before), in its store folder. */
export const LIFE_FILE = 'life.json';
/**
 * How far ahead of this node's clock a life may be to be followed: half the clock skew peers accept,
 * so that a peer whose clock is a little behind this one's still takes it.
 */
export const FOLLOW_AHEAD_S = MAX_CLOCK_SKEW_MS / 2000;

/**
 * This node's life for this start: the start second, or one past the last life's when the clock is
 * behind that (a reboot before the clock is set, an NTP step back, a crash loop within a second).
 * Peers order a member's lives by this number: a lower one than the last they saw would be taken for
 * a replay of an old announcement, so the member's restart would go unnoticed at the same address
 * (nothing copied to it again) and a move to a new address would be ignored until they forget it.
 *
 * A last life more than FOLLOW_AHEAD_S (2.5 minutes) ahead of the clock is not followed: peers
 * might refuse it (they accept 5 minutes of skew), and it may say the clock was wrong then rather
 * than now. So a clock set back further than that still gives a lower life, as before.
 *
 * The life is saved before it is used; when it cannot be saved (a full disk), the node starts anyway
 * and says so.
 */
export async function startLife(dir: string, nowMs: number, logger: Logger): Promise<number> {
  const file = join(dir, LIFE_FILE);
  const now = Math.floor(nowMs / 1000);
  let last: number | undefined;
  try {
    const saved = (JSON.parse(await readFile(file, 'utf8')) as { life?: unknown }).life;
    if (Number.isSafeInteger(saved) && (saved as number) >= 0) last = saved as number;
    else logger.warn({ file }, 'the saved life is not a whole number of seconds: ignored');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT')
      logger.warn({ file, err: (error as Error).message }, 'the saved life could not be read: ignored');
  }
  let life = now;
  if (last !== undefined && last >= now) {
    if (last + 1 <= now + FOLLOW_AHEAD_S) {
      life = last + 1;
      logger.warn(
        { clockS: now, lastLifeS: last },
        'the clock is not past this node’s last life: this life follows the last one',
      );
    } else {
      logger.warn(
        { clockS: now, lastLifeS: last },
        'the last life is too far ahead of the clock to follow: this life starts at the clock',
      );
    }
  }
  await saveLife(dir, life, logger);
  return life;
}

/**
 * Keeps `life` as this node's last (startLife, and a later life taken while running: Membership's
 * #outlive). A failure is logged, never thrown: the node goes on without it.
 */
export async function saveLife(dir: string, life: number, logger: Logger): Promise<void> {
  const file = join(dir, LIFE_FILE);
  try {
    const tmp = join(dir, 'tmp');
    await mkdir(tmp, { recursive: true });
    await atomicWrite(tmp, file, Buffer.from(JSON.stringify({ life })), true);
  } catch (error) {
    logger.warn(
      { file, err: (error as Error).message },
      'this life could not be saved: a restart with the clock behind may go unnoticed by peers',
    );
  }
}
