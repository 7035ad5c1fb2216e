package dev.nbd.backend;

import java.nio.file.Path;

import org.junit.jupiter.api.io.TempDir;

import dev.nbd.testkit.ExportBackendContractTests;

/** The file export meets the backend contract, including across a close and reopen. */
class FileBackendContractTests extends ExportBackendContractTests {

	private static final long SIZE = 16 * 1024 * 1024;

	@TempDir
	Path directory;

	@Override
	protected ExportBackend createBackend() throws Exception {
		return new FileBackend("contract-file", this.directory.resolve("disk.img"), SIZE, null, false);
	}

	@Override
	protected ExportBackend reopenBackend() throws Exception {
		return createBackend();
	}

}
