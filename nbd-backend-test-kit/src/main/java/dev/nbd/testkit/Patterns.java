package dev.nbd.testkit;

import java.util.SplittableRandom;

/** Reproducible test data: no zero runs, different for every seed. */
final class Patterns {

	private Patterns() {
	}

	static byte[] bytes(int length, long seed) {
		byte[] data = new byte[length];
		SplittableRandom random = new SplittableRandom(seed * 0x9E3779B97F4A7C15L + length);
		for (int i = 0; i < length; i++) {
			// never zero, so a range that reads back as zeroes is always noticed
			data[i] = (byte) (1 + random.nextInt(255));
		}
		return data;
	}

}
