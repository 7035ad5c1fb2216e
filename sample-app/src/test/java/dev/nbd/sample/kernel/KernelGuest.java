package dev.nbd.sample.kernel;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import dev.nbd.testsupport.ExternalTool;
import dev.nbd.testsupport.Processes;

/**
 * One boot of the test initramfs under qemu ({@code kernel-test/boot-guest.sh}). The guest's
 * {@code /init} ({@code kernel-test/init}) attaches exports of the server on the host with the
 * kernel's NBD client, runs the steps named on its command line and reports each event as a
 * {@code KTEST <kind> <args>} line on a serial port of its own, which this class reads.
 */
final class KernelGuest implements AutoCloseable {

	/** Repository folder with the guest's init and the scripts that build and boot it. */
	static final Path SCRIPTS = Path.of("..", "kernel-test").toAbsolutePath().normalize();

	/** Generous: a boot takes about 10 s in software emulation, a step up to half a minute. */
	static final Duration STEP_TIMEOUT = Duration.ofMinutes(3);

	private static final String EOF = "KTEST EOF";

	private final Process process;

	private final Path console;

	private final BlockingQueue<String> lines = new LinkedBlockingQueue<>();

	private KernelGuest(Process process, Path console) {
		this.process = process;
		this.console = console;
		Thread reader = new Thread(this::readLines, "kernel-guest-" + process.pid());
		reader.setDaemon(true);
		reader.start();
	}

	/**
	 * Builds the initramfs into {@code out} from Debian packages on this machine; the tools must
	 * be there (in CI their absence fails the test, elsewhere it skips it).
	 */
	static void buildInitramfs(Path out) {
		for (String tool : List.of("qemu-system-x86_64", "nbd-client", "busybox", "mke2fs", "e2fsck", "cpio", "modprobe")) {
			ExternalTool.require(tool);
		}
		ExternalTool.requireThat(kernelInstalled(),
				"no Debian kernel in /boot with its modules (apt-get install linux-image-amd64)");
		Processes.run(Duration.ofMinutes(3), SCRIPTS.resolve("build-initramfs.sh").toString(), out.toString())
			.assertSuccess();
	}

	private static boolean kernelInstalled() {
		try (var images = Files.list(Path.of("/boot"))) {
			return images.map(p -> p.getFileName().toString())
				.filter(name -> name.startsWith("vmlinuz-"))
				.anyMatch(name -> Files.isDirectory(Path.of("/lib/modules", name.substring("vmlinuz-".length()))));
		}
		catch (IOException ex) {
			return false;
		}
	}

	/** Boots the initramfs in {@code out}; the guest's console goes to {@code console}. */
	static KernelGuest boot(Path out, Path console, String... kernelArgs) {
		List<String> command = new ArrayList<>(
				List.of(SCRIPTS.resolve("boot-guest.sh").toString(), out.toString(), console.toString()));
		command.addAll(Arrays.asList(kernelArgs));
		try {
			Process process = Processes.builder(command).redirectError(ProcessBuilder.Redirect.DISCARD).start();
			process.getOutputStream().close();
			return new KernelGuest(process, console);
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	private void readLines() {
		try (BufferedReader in = new BufferedReader(
				new InputStreamReader(this.process.getInputStream(), StandardCharsets.UTF_8))) {
			String line;
			while ((line = in.readLine()) != null) {
				// The serial port may add carriage returns or terminal escapes around the text.
				int start = line.indexOf("KTEST ");
				if (start >= 0) {
					this.lines.add(line.substring(start).strip());
				}
			}
		}
		catch (IOException ex) {
			// qemu went away.
		}
		this.lines.add(EOF);
	}

	/** An event from the guest: {@code KTEST SYNCED 3 ab12..} is kind SYNCED, args [3, ab12..]. */
	record Event(String kind, List<String> args) {

		static Event parse(String line) {
			List<String> words = List.of(line.split(" +"));
			return new Event(words.get(1), words.subList(2, words.size()));
		}

		String arg(int i) {
			return this.args.get(i);
		}

	}

	/**
	 * The next event of one of the given kinds, skipping others. A FAIL, the end of the guest's
	 * output or the timeout fails the test with the guest's console attached.
	 */
	Event await(String... kinds) {
		long deadline = System.nanoTime() + STEP_TIMEOUT.toNanos();
		while (true) {
			String line;
			try {
				line = this.lines.poll(deadline - System.nanoTime(), TimeUnit.NANOSECONDS);
			}
			catch (InterruptedException ex) {
				Thread.currentThread().interrupt();
				throw new AssertionError("interrupted", ex);
			}
			if (line == null) {
				throw failure("no " + String.join("/", kinds) + " from the guest within " + STEP_TIMEOUT);
			}
			if (line.equals(EOF)) {
				this.lines.add(EOF);
				throw failure("the guest stopped before " + String.join("/", kinds));
			}
			Event event = Event.parse(line);
			if (event.kind().equals("FAIL")) {
				throw failure("guest step " + line.substring("KTEST FAIL ".length()));
			}
			if (Arrays.asList(kinds).contains(event.kind())) {
				return event;
			}
		}
	}

	/** Waits for {@code KTEST PASS step}; returns what the guest said with it. */
	String expectPass(String step) {
		while (true) {
			Event event = await("PASS");
			if (event.arg(0).equals(step)) {
				return String.join(" ", event.args());
			}
		}
	}

	/** Waits for the guest to power off after its last step. */
	void awaitExit() {
		try {
			if (!this.process.waitFor(STEP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
				throw failure("the guest did not power off within " + STEP_TIMEOUT);
			}
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
			throw new AssertionError("interrupted", ex);
		}
	}

	AssertionError failure(String message) {
		return new AssertionError(message + "\n--- guest console (" + this.console + "), last lines:\n" + consoleTail());
	}

	private String consoleTail() {
		try {
			// Without the terminal escapes the firmware writes.
			List<String> all = Files.readAllLines(this.console, StandardCharsets.ISO_8859_1)
				.stream()
				.map(line -> line.replaceAll("\u001b(\\[[0-9;?]*[A-Za-z]|c)", ""))
				.toList();
			return String.join("\n", all.subList(Math.max(0, all.size() - 60), all.size()));
		}
		catch (IOException ex) {
			return "(unreadable: " + ex + ")";
		}
	}

	/** Pulls the plug: qemu is killed, the guest gets no chance to write anything more. */
	@Override
	public void close() {
		this.process.destroyForcibly();
		try {
			this.process.waitFor(30, TimeUnit.SECONDS);
		}
		catch (InterruptedException ex) {
			Thread.currentThread().interrupt();
		}
	}

}
