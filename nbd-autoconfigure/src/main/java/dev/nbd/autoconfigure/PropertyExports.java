package dev.nbd.autoconfigure;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.util.unit.DataSize;

import dev.nbd.backend.ExportBackend;
import dev.nbd.backend.FileBackend;
import dev.nbd.backend.MemoryBackend;

/**
 * The backends made from {@code nbd.exports.*} entries that have a type: storage only, their
 * policy (read-only, description...) is applied by the server as for any export. Owns them:
 * closes the file backends when the context closes. Configuration mistakes fail with a
 * {@link NbdConfigurationException}.
 */
public class PropertyExports implements AutoCloseable {

	private static final Logger logger = LoggerFactory.getLogger(PropertyExports.class);

	private final List<ExportBackend> backends = new ArrayList<>();

	public PropertyExports(NbdExportProperties properties) {
		try {
			for (Map.Entry<String, NbdExportProperties.Export> entry : properties.getExports().entrySet()) {
				if (entry.getValue().getType() != null) {
					this.backends.add(create(entry.getKey(), entry.getValue()));
				}
			}
		}
		catch (RuntimeException ex) {
			closeQuietly();
			throw ex;
		}
	}

	private static ExportBackend create(String name, NbdExportProperties.Export export) {
		String prefix = "nbd.exports." + name + ".";
		DataSize size = export.getSize();
		if (size != null && size.isNegative()) {
			throw new NbdConfigurationException(prefix + "size is negative (" + size + ").",
					"Set " + prefix + "size to the export size, e.g. 1GB.");
		}
		return switch (export.getType()) {
			case MEMORY -> {
				notForType(prefix, "path", export.getPath() != null, "memory");
				notForType(prefix, "event-loop-io", export.getEventLoopIo() != null, "memory");
				if (size == null) {
					throw new NbdConfigurationException(prefix + "size is required for a memory export.",
							"Set " + prefix + "size, e.g. " + prefix + "size=1GB.");
				}
				try {
					yield new MemoryBackend(name, size.toBytes());
				}
				catch (IllegalArgumentException ex) {
					throw new NbdConfigurationException(prefix + "size " + size + " is not possible: " + ex.getMessage()
							+ ".", "Choose a smaller " + prefix + "size.", ex);
				}
			}
			case FILE -> file(name, prefix, export);
		};
	}

	private static void notForType(String prefix, String key, boolean set, String type) {
		if (set) {
			throw new NbdConfigurationException(prefix + key + " is set, but it only applies to 'file' exports and "
					+ prefix + "type is '" + type + "'.", "Remove " + prefix + key + ", or set " + prefix + "type=file.");
		}
	}

	private static ExportBackend file(String name, String prefix, NbdExportProperties.Export export) {
		Path path = export.getPath();
		if (path == null) {
			throw new NbdConfigurationException(prefix + "path is required for a file export.",
					"Set " + prefix + "path to the backing file, e.g. " + prefix + "path=./data/" + name + ".img.");
		}
		Path absolute = path.toAbsolutePath();
		if (Files.isDirectory(absolute)) {
			throw new NbdConfigurationException(prefix + "path " + absolute + " is a directory.",
					"Set " + prefix + "path to a file (it is created when missing and a size is set).");
		}
		long size = (export.getSize() != null) ? export.getSize().toBytes() : -1;
		if (!Files.exists(absolute)) {
			if (export.isReadOnly()) {
				throw new NbdConfigurationException(
						prefix + "path " + absolute + " does not exist, and a read-only export is never created.",
						"Check " + prefix + "path, or set " + prefix + "read-only=false to create it.");
			}
			if (size < 0) {
				throw new NbdConfigurationException(
						prefix + "path " + absolute + " does not exist, and " + prefix
								+ "size is not set, so the size of the file to create is unknown.",
						"Check " + prefix + "path, or set " + prefix + "size to create a sparse file of that size.");
			}
			Path parent = absolute.getParent();
			if (parent != null && !Files.isDirectory(parent)) {
				logger.info("Creating directory {} for {}path", parent, prefix);
			}
			logger.info("Creating sparse file {} ({} bytes) for export '{}'", absolute, size, name);
		}
		try {
			// Opened read-only when the export is: no write access to the file is needed then. The
			// file is offered to the server, whose policy (event-loop-io) decides where its calls run.
			return new FileBackend(name, path, size, null, export.isReadOnly(),
					!Boolean.FALSE.equals(export.getEventLoopIo()));
		}
		catch (IOException ex) {
			throw new NbdConfigurationException("Cannot open " + prefix + "path " + absolute + ": " + ex,
					"Check that the file (and its directory) can be " + (export.isReadOnly() ? "read" : "read and written")
							+ " by this process, and that it is at least " + prefix + "size long if read-only.",
					ex);
		}
	}

	public List<ExportBackend> backends() {
		return this.backends;
	}

	@Override
	public void close() throws Exception {
		for (ExportBackend backend : this.backends) {
			if (backend instanceof AutoCloseable closeable) {
				closeable.close();
			}
		}
	}

	private void closeQuietly() {
		try {
			close();
		}
		catch (Exception ex) {
			logger.debug("Could not close an export after a failed start", ex);
		}
	}

}
