/*
 * Samplesheet checks, run in Groovy when the workflow starts (nf-core style, no plugin):
 * a bad samplesheet stops the run before any task is submitted, with a message that names
 * the row. The rules are bonemet's (bonemet.io.read_samplesheet):
 *
 *   sample,path[,format,batch,condition,species]     (CSV; .tsv files are tab-separated)
 *
 *   - sample: unique, letters, digits, '.', '_' and '-' only (it becomes a file name)
 *   - path:   a file or 10x folder; relative paths are relative to the samplesheet's folder;
 *             local paths must exist (URLs such as s3:// or https:// are staged by Nextflow)
 *   - format: auto | h5ad | 10x_mtx | 10x_h5 | csv | tsv (empty = auto; aliases mtx, 10x,
 *             h5, txt are passed to `bonemet ingest` as 10x_mtx, 10x_mtx, 10x_h5, csv)
 *   - species: auto | human | mouse                   (empty = the config's input.species)
 *
 * Returns a list of [meta, path] with meta = [id, format, batch, condition, species].
 * Unknown columns are ignored, with a warning unless warnUnknown is false (the samplesheets
 * that `bonemet simulate` and `bonemet fetch-geo` write carry extra descriptive columns).
 */

List parseSamplesheetLine(String line, String sep) {
    def fields = []
    def cur = new StringBuilder()
    boolean quoted = false
    int i = 0
    while (i < line.length()) {
        String c = line.substring(i, i + 1)
        if (quoted) {
            if (c == '"') {
                if (i + 1 < line.length() && line.substring(i + 1, i + 2) == '"') {
                    cur.append('"')
                    i++
                } else {
                    quoted = false
                }
            } else {
                cur.append(c)
            }
        } else if (c == '"') {
            quoted = true
        } else if (c == sep) {
            fields << cur.toString().trim()
            cur.setLength(0)
        } else {
            cur.append(c)
        }
        i++
    }
    fields << cur.toString().trim()
    return fields
}

List readSamplesheet(Object sheetArg, boolean warnUnknown = true) {
    def required = ['sample', 'path']
    def optional = ['format', 'batch', 'condition', 'species']
    def formats  = ['auto', '10x_mtx', '10x_h5', 'h5ad', 'csv', 'tsv', 'mtx', '10x', 'h5', 'txt']
    def aliases  = [tsv: 'csv', txt: 'csv', mtx: '10x_mtx', '10x': '10x_mtx', h5: '10x_h5']
    def species  = ['auto', 'human', 'mouse']

    def sheet = sheetArg instanceof java.nio.file.Path ? sheetArg : file(sheetArg.toString())
    def where = "Samplesheet ${sheetArg}"
    if (!sheet.exists()) {
        error("${where} does not exist: check --input (a CSV with columns sample,path[,format,batch,condition,species])")
    }
    if (sheet.isDirectory()) {
        error("${where} is a folder: --input takes a samplesheet CSV with columns sample,path[,format,batch,condition,species]")
    }
    def sep = sheet.name.toLowerCase().endsWith('.tsv') ? '\t' : ','
    def lines = sheet.readLines()
    if (lines && lines[0].startsWith('\uFEFF')) {
        lines[0] = lines[0].substring(1)
    }
    int headerIdx = lines.findIndexOf { it.trim() && !it.trim().startsWith('#') }
    if (headerIdx < 0) {
        error("${where} is empty: it needs a header line sample,path[,format,batch,condition,species] and one row per sample")
    }
    def header = parseSamplesheetLine(lines[headerIdx], sep).collect { it.toLowerCase() }
    def missing = required.findAll { !(it in header) }
    if (missing) {
        error("${where}: the header (line ${headerIdx + 1}) lacks the required column(s) '${missing.join("', '")}': found '${header.join(sep)}', expected sample,path[,format,batch,condition,species]")
    }
    def dupCols = header.findAll { col -> header.count(col) > 1 }.unique()
    if (dupCols) {
        error("${where}: the header (line ${headerIdx + 1}) repeats the column(s) '${dupCols.join("', '")}': name each column once")
    }
    def unknown = header.findAll { !(it in required + optional) }
    if (unknown && warnUnknown) {
        log.warn "${where}: ignoring unknown column(s) '${unknown.join("', '")}' (known: ${(required + optional).join(', ')})"
    }

    def rows = []
    def seen = [:]
    int rowNo = 0
    for (int li = headerIdx + 1; li < lines.size(); li++) {
        def line = lines[li]
        if (!line.trim() || line.trim().startsWith('#')) {
            continue
        }
        rowNo++
        def row = "${where}, row ${rowNo} (line ${li + 1})"
        def fields = parseSamplesheetLine(line, sep)
        if (fields.size() != header.size()) {
            error("${row}: ${fields.size()} field(s) but the header has ${header.size()} (${header.join(sep)}): fix the row")
        }
        def r = [header, fields].transpose().collectEntries { [(it[0]): it[1]] }
        def id = r.sample
        if (!id) {
            error("${row}: the sample column is empty: give every row a sample name")
        }
        if (!(id ==~ /^[A-Za-z0-9._-]+$/)) {
            error("${row}: sample '${id}' may contain only letters, digits, '.', '_' and '-': rename it")
        }
        if (seen.containsKey(id)) {
            error("${row}: duplicate sample '${id}' (already on row ${seen[id]}): sample names must be unique; merge the rows or rename one")
        }
        seen[id] = rowNo
        def p = r.path
        if (!p) {
            error("${row} (sample '${id}'): the path column is empty: give the counts file or 10x folder")
        }
        def remote = p ==~ /^[A-Za-z][A-Za-z0-9+.-]*:\/\/.+/
        def data
        if (remote) {
            data = file(p)
        } else {
            def local = p.startsWith('~/') ? java.nio.file.Paths.get(System.getProperty('user.home'), p.substring(2)) : java.nio.file.Paths.get(p)
            data = (local.isAbsolute() ? local : sheet.toAbsolutePath().parent.resolve(local)).normalize()
            if (!data.exists()) {
                error("${row} (sample '${id}'): path '${p}' does not exist${local.isAbsolute() ? '' : " (relative paths are read from the samplesheet's folder: ${data})"}: fix the path")
            }
        }
        def fmt = r.format ? r.format.toLowerCase() : 'auto'
        if (!(fmt in formats)) {
            error("${row} (sample '${id}'): format '${r.format}' is not one of ${formats.take(6).join(', ')}")
        }
        def sp = r.species ? r.species.toLowerCase() : null
        if (sp && !(sp in species)) {
            error("${row} (sample '${id}'): species '${r.species}' is not one of ${species.join(', ')}")
        }
        def meta = [id: id, format: aliases.get(fmt, fmt), batch: r.batch ?: null, condition: r.condition ?: null, species: sp]
        rows << [meta, data]
    }
    if (!rows) {
        error("${where} has a header but no sample rows: add one row per sample")
    }
    return rows
}
