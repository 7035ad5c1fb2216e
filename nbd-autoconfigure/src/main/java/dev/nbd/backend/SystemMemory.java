package dev.nbd.backend;

import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * What memory the process may use: the machine's RAM or, in a container, its cgroup limit (the
 * JDK's operating-system bean reads both), and how much of it is still available.
 */
public final class SystemMemory {

	private static final Path MEMINFO = Path.of("/proc/meminfo");

	private static final Path CGROUP = Path.of("/sys/fs/cgroup");

	private SystemMemory() {
	}

	/** RAM the process may use (container limit included), or -1 when unknown. */
	public static long limit() {
		if (ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
			long total = os.getTotalMemorySize();
			return (total > 0) ? total : -1;
		}
		return -1;
	}

	/**
	 * Memory that can still be taken without the kernel reclaiming anything but caches: the
	 * smaller of the machine's MemAvailable and what is left under the cgroup's memory.max (v2)
	 * or limit (v1). {@link Long#MAX_VALUE} when neither can be read (not Linux).
	 */
	public static long available() {
		long available = Long.MAX_VALUE;
		Long memAvailable = meminfo("MemAvailable:");
		if (memAvailable != null) {
			available = memAvailable;
		}
		long left = cgroupLeft(CGROUP.resolve("memory.max"), CGROUP.resolve("memory.current"),
				CGROUP.resolve("memory.stat"), "inactive_file ");
		if (left == Long.MAX_VALUE) {
			left = cgroupLeft(CGROUP.resolve("memory/memory.limit_in_bytes"), CGROUP.resolve("memory/memory.usage_in_bytes"),
					CGROUP.resolve("memory/memory.stat"), "total_inactive_file ");
		}
		return Math.min(available, left);
	}

	private static Long meminfo(String key) {
		return field(MEMINFO, key, 1024);
	}

	private static Long field(Path file, String key, long unit) {
		try {
			for (String line : Files.readAllLines(file)) {
				if (line.startsWith(key)) {
					String[] parts = line.substring(key.length()).trim().split("\\s+");
					return Long.parseLong(parts[0]) * unit;
				}
			}
		}
		catch (IOException | RuntimeException ex) {
			// Not Linux, or unreadable: unknown.
		}
		return null;
	}

	/** What is left under a cgroup limit; page cache that is easy to reclaim does not count as used. */
	private static long cgroupLeft(Path max, Path current, Path stat, String reclaimable) {
		try {
			List<String> limit = Files.readAllLines(max);
			if (limit.isEmpty() || !Character.isDigit(limit.get(0).charAt(0))) {
				return Long.MAX_VALUE;
			}
			long l = Long.parseLong(limit.get(0).trim());
			if (l >= Long.MAX_VALUE / 2) {
				// cgroup v1 writes "no limit" as a huge number.
				return Long.MAX_VALUE;
			}
			long used = Long.parseLong(Files.readAllLines(current).get(0).trim());
			Long cache = field(stat, reclaimable, 1);
			if (cache != null) {
				used -= cache;
			}
			return Math.max(0, l - used);
		}
		catch (IOException | RuntimeException ex) {
			return Long.MAX_VALUE;
		}
	}

}
