package dev.nbd.sample.kernel;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.Timeout;
import org.springframework.util.FileSystemUtils;
import tools.jackson.databind.JsonNode;

import dev.nbd.sample.kernel.KernelGuest.Event;
import dev.nbd.sample.support.SampleAppProcess;
import dev.nbd.testsupport.ActuatorClient;
import dev.nbd.testsupport.FreePort;
import dev.nbd.testsupport.Processes;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

/**
 * The Linux kernel's NBD client against the sample app: Debian's kernel boots under qemu (software
 * emulation, no KVM) from an initramfs built here from installed packages, attaches exports with
 * {@code nbd-client -C 4} (four connections, as the server advertises CAN_MULTI_CONN) and puts
 * ext4 on them; the guest's verdicts come back over a serial port. The server runs as its own
 * process, so it can be killed and restarted under the guest. Software emulation on a loaded
 * machine takes minutes per boot: the timeouts here are above the suite's 5 minute default.
 */
@Timeout(value = 20, unit = TimeUnit.MINUTES)
class KernelClientIT {

	static final Path WORK = Path.of("target", "kernel-test").toAbsolutePath();

	static final Path INITRAMFS = WORK.resolve("initramfs");

	@BeforeAll
	@Timeout(value = 20, unit = TimeUnit.MINUTES)
	static void buildInitramfs() throws IOException {
		FileSystemUtils.deleteRecursively(WORK);
		Files.createDirectories(INITRAMFS);
		KernelGuest.buildInitramfs(INITRAMFS);
	}

	static KernelGuest boot(SampleAppProcess app, String name, String... args) {
		List<String> kernelArgs = new ArrayList<>(List.of("ktest.port=" + app.nbdPort()));
		kernelArgs.addAll(List.of(args));
		return KernelGuest.boot(INITRAMFS, WORK.resolve(name + ".console.log"), kernelArgs.toArray(String[]::new));
	}

	/**
	 * One boot: ext4 made, filled, checked and read back cold on the memory and the file export,
	 * and an ext4 image the host made, served read-only.
	 */
	@Nested
	@TestInstance(TestInstance.Lifecycle.PER_CLASS)
	class FileSystems {

		private final Path data = WORK.resolve("filesystems");

		private final List<String> passed = new ArrayList<>();

		private Path image;

		private String imageChecksum;

		private AssertionError failure;

		@BeforeAll
		@Timeout(value = 20, unit = TimeUnit.MINUTES)
		void bootOnce() throws IOException {
			this.image = this.data.resolve("ro.img");
			String manifest = makeImage(this.data.resolve("ro-content"), this.image);
			this.imageChecksum = sha256(Files.readAllBytes(this.image));
			try (SampleAppProcess app = SampleAppProcess.start(this.data, "--nbd.exports.ro.type=file",
					"--nbd.exports.ro.path=" + this.image, "--nbd.exports.ro.read-only=true");
					KernelGuest guest = boot(app, "filesystems", "ktest.steps=roundtrip,readonly",
							"ktest.exports=mem,disk", "ktest.export=ro", "ktest.manifest=1:" + manifest)) {
				try {
					while (true) {
						this.passed.add(guest.await("PASS", "DONE").args().stream().findFirst().orElse("DONE"));
						if (this.passed.contains("DONE")) {
							break;
						}
					}
				}
				catch (AssertionError ex) {
					this.failure = new AssertionError(ex.getMessage() + "\n--- sample app log:\n" + app.log());
				}
			}
		}

		private void assertPassed(String step) {
			if (!this.passed.contains(step)) {
				throw (this.failure != null) ? this.failure : new AssertionError("guest step " + step + " did not pass");
			}
		}

		@Test
		void ext4OnMemoryExportSurvivesUnmountFsckAndColdCache() {
			assertPassed("roundtrip-mem");
		}

		@Test
		void ext4OnFileExportSurvivesUnmountFsckAndColdCache() {
			assertPassed("roundtrip-disk");
		}

		@Test
		void readOnlyExportMountsReadOnlyAndRefusesWrites() throws IOException {
			assertPassed("readonly");
			assertThat(sha256(Files.readAllBytes(this.image))).as("read-only image after the guest").isEqualTo(this.imageChecksum);
		}

	}

	/**
	 * The server dies under the guest (SIGKILL right after a sync, SIGKILL mid-write, SIGTERM
	 * mid-write) and comes back on the same file and port; a new boot checks what survived. The
	 * tests continue one another: each leaves the next boot running.
	 */
	@Nested
	@TestInstance(TestInstance.Lifecycle.PER_CLASS)
	@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
	class CrashesAndRestarts {

		private final Path data = WORK.resolve("crashes");

		private int port;

		private SampleAppProcess app;

		private KernelGuest guest;

		/** The newest manifest the guest reported as synced: "K:SHA256". */
		private String synced;

		@BeforeAll
		@Timeout(value = 20, unit = TimeUnit.MINUTES)
		void startServer() {
			this.port = FreePort.find();
			this.app = SampleAppProcess.start(this.data, this.port);
		}

		@AfterAll
		void stop() {
			if (this.guest != null) {
				this.guest.close();
			}
			if (this.app != null) {
				this.app.close();
			}
		}

		private void restartServer() {
			this.app = SampleAppProcess.start(this.data, this.port);
		}

		private KernelGuest bootOnDisk(String name, String steps) {
			List<String> args = new ArrayList<>(List.of("ktest.export=disk", "ktest.steps=" + steps));
			if (this.synced != null) {
				args.add("ktest.manifest=" + this.synced);
			}
			return boot(this.app, name, args.toArray(String[]::new));
		}

		private void remember(Event synced) {
			this.synced = synced.arg(0) + ":" + synced.arg(1);
		}

		@Test
		@Order(1)
		void filesSyncedBeforeSigkillAreIntactAfterRestart() {
			try (KernelGuest first = bootOnDisk("crash-1-prepare", "prepare,hold")) {
				remember(first.await("SYNCED"));
				// At once: the FLUSH reply promised that everything before it is durable.
				this.app.kill9();
			}
			restartServer();
			this.guest = bootOnDisk("crash-2-check", "check,unsynced");
			this.guest.expectPass("check");
		}

		@Test
		@Order(2)
		void sigkillMidWriteLeavesARepairableFileSystem() {
			assertThat(this.guest).as("the guest left writing by the previous test").isNotNull();
			this.guest.await("WRITING");
			// Pull the server once writeback, direct writes and journal commits are flowing: a MiB
			// more written and two more flushes (commits every second) than when the guest began.
			ActuatorClient actuator = new ActuatorClient(this.app.httpPort());
			JsonNode before = actuator.getJson("/actuator/nbd/disk");
			await().atMost(Duration.ofMinutes(2)).pollInterval(Duration.ofMillis(100)).untilAsserted(() -> {
				JsonNode now = actuator.getJson("/actuator/nbd/disk");
				assertThat(now.get("bytesWritten").asLong() - before.get("bytesWritten").asLong())
					.as("bytes written since WRITING")
					.isGreaterThanOrEqualTo(1 << 20);
				assertThat(now.get("flushRequests").asLong() - before.get("flushRequests").asLong())
					.as("flushes since WRITING")
					.isGreaterThanOrEqualTo(2);
			});
			this.app.kill9();
			this.guest.close();
			restartServer();
			this.guest = bootOnDisk("crash-3-repair", "repair,rounds");
			String verdict = this.guest.expectPass("repair");
			assertThat(verdict).contains("e2fsck -fy exit code");
		}

		@Test
		@Order(3)
		void sigtermWhileWritingEndsWritesCleanlyAndKeepsSyncedData() {
			assertThat(this.guest).as("the guest left writing by the previous test").isNotNull();
			remember(this.guest.await("SYNCED"));
			remember(this.guest.await("SYNCED"));
			// Graceful shutdown while the guest writes its next round.
			CompletableFuture<Integer> exit = CompletableFuture.supplyAsync(() -> this.app.terminate(Duration.ofSeconds(60)));
			while (true) {
				Event event = this.guest.await("SYNCED", "PASS");
				if (event.kind().equals("PASS")) {
					// The guest's writes failed (or finished) and it unmounted: nothing hung.
					assertThat(event.arg(0)).isEqualTo("rounds");
					break;
				}
				remember(event);
			}
			exit.join();
			this.guest.close();
			restartServer();
			this.guest = bootOnDisk("crash-4-check", "check");
			this.guest.expectPass("check");
			this.guest.awaitExit();
		}

	}

	/**
	 * Files with random content under {@code content/data}, their checksums in
	 * {@code content/MANIFEST-1} (as the guest writes manifests), put into a fresh ext4 image by
	 * {@code mkfs.ext4 -d}. Returns the manifest's checksum.
	 */
	static String makeImage(Path content, Path image) throws IOException {
		Random random = new Random(8);
		List<String> lines = new ArrayList<>();
		for (int i = 0; i < 50; i++) {
			String name = "data/d" + (i % 4) + "/f" + i;
			byte[] bytes = new byte[random.nextInt(64 * 1024)];
			random.nextBytes(bytes);
			Path file = content.resolve(name);
			Files.createDirectories(file.getParent());
			Files.write(file, bytes);
			lines.add(sha256(bytes) + "  " + name);
		}
		byte[] manifest = (String.join("\n", lines) + "\n").getBytes(StandardCharsets.UTF_8);
		Files.write(content.resolve("MANIFEST-1"), manifest);
		// 4 KiB blocks: the guest attaches with a 4 KiB block size, and ext4 cannot mount smaller ones.
		Processes.run(Duration.ofMinutes(1), "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", content.toString(),
				image.toString(), "16M")
			.assertSuccess();
		return sha256(manifest);
	}

	static String sha256(byte[] bytes) {
		try {
			return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(bytes));
		}
		catch (NoSuchAlgorithmException ex) {
			throw new IllegalStateException(ex);
		}
	}

}
