package dev.nbd.sample;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.RandomAccessFile;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Libnbd;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Durability of the file export checked from outside the JVM. The sample app runs under
 * {@code strace}: a write answered on connection A, then a FLUSH answered on connection B must
 * have caused an {@code fdatasync}/{@code fsync} of the disk image between the client sending
 * the request and receiving its reply; a FUA write must have caused either that or a
 * {@code pwrite64} of its bytes through a descriptor of the image opened with {@code O_DSYNC}
 * (the kernel syncs such a write's range before the call returns). Those system calls are what
 * prove durability. Then the server is killed with SIGKILL (no shutdown hook, no final flush) and
 * the bytes are read from the file directly, which only shows they reached the kernel: the page
 * cache survives the death of a process, so they would be there without any sync.
 */
class FlushDurabilityIT {

	/** Client: prints the request windows (wall clock, seconds) and the data, then waits. */
	private static final String CLIENT = """
			import nbd, os, sys, time
			uri = sys.argv[1]
			a = nbd.NBD(); a.connect_uri(uri)
			b = nbd.NBD(); b.connect_uri(uri)
			assert a.can_multi_conn() and b.can_multi_conn()
			B = 4096
			flushed = os.urandom(B)
			a.pwrite(flushed, 1 << 20)
			t0 = time.time(); b.flush(); t1 = time.time()
			print("flush", repr(t0), repr(t1), 1 << 20, flushed.hex(), flush=True)
			fua = os.urandom(B)
			t2 = time.time(); a.pwrite(fua, 2 << 20, nbd.CMD_FLAG_FUA); t3 = time.time()
			print("fua", repr(t2), repr(t3), 2 << 20, fua.hex(), flush=True)
			print("done", flush=True)
			sys.stdin.read()
			""";

	@Test
	void aSyncInterruptedByAnotherThreadInTheTraceIsStillFound() {
		// Seen in a CI run: another thread's call split the fdatasync line in two.
		List<String> lines = joinInterrupted(List.of(
				"16357 1796182069.893478 fdatasync(9</tmp/x/disk.img> <unfinished ...>",
				"16358 1796182069.894000 pwrite64(10</tmp/x/disk.img>, \"ab\"..., 4096, 2097152) = 4096",
				"16357 1796182069.894779 <... fdatasync resumed>) = 0"));
		assertThat(lines).hasSize(2);
		Matcher m = SYNC.matcher(lines.get(1));
		assertThat(m.find()).as(lines.get(1)).isTrue();
		assertThat(m.group(1)).isEqualTo("1796182069.893478");
		assertThat(m.group(4)).isEqualTo("/tmp/x/disk.img");
	}

	/**
	 * strace -f splits a call that another thread interrupts into {@code PID T name(args <unfinished ...>}
	 * and, later, {@code PID T' <... name resumed>rest}: joined here into one line with the start time.
	 */
	static List<String> joinInterrupted(List<String> lines) {
		java.util.Map<String, String> pending = new java.util.HashMap<>();
		List<String> joined = new ArrayList<>();
		for (String line : lines) {
			String pid = line.split("\\s+", 2)[0];
			if (line.endsWith(" <unfinished ...>")) {
				pending.put(pid, line.substring(0, line.length() - " <unfinished ...>".length()));
				continue;
			}
			int resumed = line.indexOf(" resumed>");
			if (line.contains("<... ") && resumed > 0 && pending.containsKey(pid)) {
				joined.add(pending.remove(pid) + line.substring(resumed + " resumed>".length()));
				continue;
			}
			joined.add(line);
		}
		return joined;
	}

	/** {@code PID SECONDS.MICROS fdatasync(FD</path>) = 0} as written by strace -f -ttt -y. */
	private static final Pattern SYNC = Pattern
		.compile("^\\d+\\s+(\\d+\\.\\d+)\\s+(fdatasync|fsync)\\((\\d+)<([^>]*)>\\)\\s+=\\s+0");

	/** {@code openat(..., "PATH", FLAGS...) = FD</path>}: descriptors opened with O_DSYNC or O_SYNC. */
	private static final Pattern SYNC_OPEN = Pattern
		.compile("^\\d+\\s+\\d+\\.\\d+\\s+openat\\(.*, \"([^\"]*)\", ([A-Z_|]+).*\\)\\s+=\\s+(\\d+)<");

	/** {@code pwrite64(FD</path>, ..., COUNT, OFFSET) = COUNT}. */
	private static final Pattern PWRITE = Pattern
		.compile("^\\d+\\s+(\\d+\\.\\d+)\\s+pwrite64\\((\\d+)<([^>]*)>, .*, (\\d+), (\\d+)\\)\\s+=\\s+(\\d+)");

	@TempDir
	Path data;

	record Window(double from, double to, long offset, byte[] bytes) {
	}

	@Test
	void answeredFlushAndFuaReachTheDiskBeforeTheReply() throws Exception {
		Path strace = ExternalTool.require("strace");
		Libnbd.require();
		Path trace = this.data.resolve("strace.out");
		// seccomp-bpf stops the JVM only at the traced calls, so it runs at nearly full speed.
		SampleAppProcess app = SampleAppProcess.startWrapped(this.data, List.of(strace.toString(), "-f",
				"--seccomp-bpf", "-ttt", "-y", "-e", "trace=fdatasync,fsync,openat,pwrite64", "-o", trace.toString()));
		Map<String, Window> windows = new HashMap<>();
		Process client = Libnbd.startPython(CLIENT, app.uri("disk"));
		StringBuilder other = new StringBuilder();
		// A client that hangs is killed, so the read below ends (with null) instead of blocking.
		CompletableFuture.runAsync(client::destroyForcibly, CompletableFuture.delayedExecutor(2, TimeUnit.MINUTES));
		try {
			BufferedReader out = new BufferedReader(new InputStreamReader(client.getInputStream(), StandardCharsets.UTF_8));
			String line;
			while ((line = out.readLine()) != null && !line.equals("done")) {
				String[] f = line.split(" ");
				if (f.length != 5 || !(f[0].equals("flush") || f[0].equals("fua"))) {
					// Anything else the client printed (a Python traceback): shown if it fails.
					other.append(line).append('\n');
					continue;
				}
				windows.put(f[0], new Window(Double.parseDouble(f[1]), Double.parseDouble(f[2]), Long.parseLong(f[3]),
						HexFormat.of().parseHex(f[4])));
			}
			assertThat(line).as("client finished its writes\n" + other + app.log()).isEqualTo("done");
			// Connections still open, nothing flushed by a disconnect or a shutdown hook.
			app.kill9();
		}
		finally {
			client.destroyForcibly();
			client.waitFor(10, TimeUnit.SECONDS);
			app.close();
		}
		Path disk = this.data.resolve("disk.img");
		for (Window w : windows.values()) {
			assertThat(readFile(disk, w.offset(), w.bytes().length)).isEqualTo(w.bytes());
		}
		List<double[]> syncs = new ArrayList<>();
		List<double[]> syncedWrites = new ArrayList<>();
		java.util.Set<String> syncDescriptors = new java.util.HashSet<>();
		for (String l : joinInterrupted(Files.readAllLines(trace))) {
			Matcher m = SYNC.matcher(l);
			if (m.find() && m.group(4).endsWith("/disk.img")) {
				syncs.add(new double[] { Double.parseDouble(m.group(1)) });
			}
			Matcher open = SYNC_OPEN.matcher(l);
			if (open.find() && open.group(1).endsWith("/disk.img")
					&& java.util.Arrays.asList(open.group(2).split("\\|")).stream()
						.anyMatch(f -> f.equals("O_DSYNC") || f.equals("O_SYNC"))) {
				syncDescriptors.add(open.group(3));
			}
			Matcher write = PWRITE.matcher(l);
			if (write.find() && write.group(3).endsWith("/disk.img") && syncDescriptors.contains(write.group(2))
					&& write.group(4).equals(write.group(6))) {
				syncedWrites.add(new double[] { Double.parseDouble(write.group(1)), Long.parseLong(write.group(5)) });
			}
		}
		String traced = Files.readString(trace);
		Window flush = windows.get("flush");
		assertThat(syncs).as("flush: a sync of disk.img between " + flush.from() + " and " + flush.to() + " in\n" + traced)
			.anyMatch(s -> s[0] >= flush.from() && s[0] <= flush.to());
		Window fua = windows.get("fua");
		assertThat(syncs.stream().anyMatch(s -> s[0] >= fua.from() && s[0] <= fua.to())
				|| syncedWrites.stream().anyMatch(w -> w[0] >= fua.from() && w[0] <= fua.to() && w[1] == fua.offset()))
			.as("fua: a sync of disk.img, or an O_DSYNC write at " + fua.offset() + ", between " + fua.from() + " and "
					+ fua.to() + " in\n" + traced)
			.isTrue();
		// And the file backend's FUA needs no sync of the whole file: only its own write is synced.
		assertThat(syncedWrites).as("fua: an O_DSYNC write in\n" + traced)
			.anyMatch(w -> w[0] >= fua.from() && w[0] <= fua.to() && w[1] == fua.offset());
		assertThat(syncs).as("fua: no whole-file sync in\n" + traced)
			.noneMatch(s -> s[0] >= fua.from() && s[0] <= fua.to());
	}

	private static byte[] readFile(Path file, long offset, int length) throws IOException {
		try (RandomAccessFile f = new RandomAccessFile(file.toFile(), "r")) {
			byte[] b = new byte[length];
			f.seek(offset);
			f.readFully(b);
			return b;
		}
	}

}
