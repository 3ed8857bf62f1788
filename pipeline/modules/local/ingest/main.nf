/*
 * INGEST (per sample): one sample's counts (.h5ad, 10x folder or .h5, CSV/TSV) -> raw-count
 * .h5ad with obs["sample"], gene symbols as var_names and the detected species.
 */
process INGEST {
    tag "${meta.id}"
    label 'process_low'

    input:
    tuple val(meta), path(counts, stageAs: 'input/*')
    val  config_yaml   // this stage's slice of config.yaml, as text: -resume compares it by value

    output:
    tuple val(meta), path("${prefix}.h5ad"), emit: h5ad
    path "versions.yml"                    , emit: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def config_b64 = config_yaml.toString().bytes.encodeBase64().toString()  // one safe shell word
    def args      = task.ext.args ?: ''
    prefix        = task.ext.prefix ?: "${meta.id}"
    def format    = meta.format ? "--format ${meta.format}" : ''
    def batch     = meta.batch ? "--batch '${meta.batch}'" : ''
    def condition = meta.condition ? "--condition '${meta.condition}'" : ''
    def subject   = meta.subject ? "--subject '${meta.subject}'" : ''
    def tissue    = meta.tissue ? "--tissue '${meta.tissue}'" : ''
    def species   = meta.species ? "--species ${meta.species}" : ''
    """
    python3 -c "import base64; open('stage_config.yaml', 'wb').write(base64.b64decode('${config_b64}'))"
    export BONEMET_THREADS=${task.cpus} OMP_NUM_THREADS=${task.cpus} MKL_NUM_THREADS=${task.cpus} OPENBLAS_NUM_THREADS=${task.cpus} NUMBA_NUM_THREADS=${task.cpus}
    bonemet ingest \\
        --input ${counts} \\
        --sample ${meta.id} \\
        ${format} ${batch} ${condition} ${subject} ${tissue} ${species} \\
        --config stage_config.yaml \\
        ${args} \\
        --output ${prefix}.h5ad

    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(bonemet --version 2>&1 | sed 's/^bonemet //')
    END_VERSIONS
    """

    stub:
    prefix = task.ext.prefix ?: "${meta.id}"
    """
    touch ${prefix}.h5ad
    cat <<-END_VERSIONS > versions.yml
    "${task.process}":
        bonemet: \$(python -c "from importlib.metadata import version; print(version('bonemet'))" 2>/dev/null || echo stub)
    END_VERSIONS
    """
}
