/*
 * The bonemet workflow: every process calls one `bonemet` stage command; no analysis logic
 * and no parameter defaults live here (MAKE_CONFIG writes the run's config.yaml, and one
 * slice of it per stage: each task gets the keys its stage reads, as a value, so -resume
 * re-runs a stage only when its own settings or its input changed).
 *
 *   MAKE_CONFIG -> [SIMULATE | FETCH_GEO | samplesheet] -> INGEST, QC (per sample, in
 *   parallel) -> MERGE -> INTEGRATE (process_gpu) -> CLUSTER -> ANNOTATE -> SCORE -> COMPARE
 *   -> LIGREC -> REPORT
 */

include { MAKE_CONFIG     } from '../modules/local/make_config/main'
include { SIMULATE        } from '../modules/local/simulate/main'
include { FETCH_GEO       } from '../modules/local/fetch_geo/main'
include { INGEST          } from '../modules/local/ingest/main'
include { QC              } from '../modules/local/qc/main'
include { MERGE           } from '../modules/local/merge/main'
include { INTEGRATE       } from '../modules/local/integrate/main'
include { CLUSTER         } from '../modules/local/cluster/main'
include { ANNOTATE        } from '../modules/local/annotate/main'
include { SCORE           } from '../modules/local/score/main'
include { COMPARE         } from '../modules/local/compare/main'
include { LIGREC          } from '../modules/local/ligrec/main'
include { REPORT          } from '../modules/local/report/main'
include { readSamplesheet } from './samplesheet'

workflow BONEMET {
    take:
    samples         // list of [meta, path] from a validated --input samplesheet, or [] (GEO / simulated input)
    base_config     // path of the user's --config YAML, or []
    overrides       // list of 'section.key=value' strings for `bonemet config --set`

    main:
    def run_meta = [id: 'bonemet']
    ch_versions  = Channel.empty()

    MAKE_CONFIG(run_meta, base_config, overrides)
    ch_config   = MAKE_CONFIG.out.config     // a value channel: FETCH_GEO and REPORT read it all
    ch_versions = ch_versions.mix(MAKE_CONFIG.out.versions)
    ch_stage_yaml = MAKE_CONFIG.out.stages.flatten().map { f -> [f.baseName, f.text] }
    def stageConfig = { String name ->
        ch_stage_yaml.filter { it[0] == name }.map { it[1] }.first()   // a value channel
    }

    //
    // Per-sample inputs
    //
    if (params.input) {
        ch_samples = Channel.fromList(samples)
    } else if (params.geo) {
        FETCH_GEO([id: params.geo, samples: params.geo_samples ?: null], ch_config)
        ch_samples  = FETCH_GEO.out.samplesheet.flatMap { meta, sheet -> readSamplesheet(sheet, false) }
        ch_versions = ch_versions.mix(FETCH_GEO.out.versions)
    } else {
        SIMULATE([id: 'simulated', cells: params.sim_cells, samples: params.sim_samples,
                  species: params.sim_species, seed: params.sim_seed])
        ch_samples  = SIMULATE.out.samplesheet.flatMap { meta, sheet -> readSamplesheet(sheet, false) }
        ch_versions = ch_versions.mix(SIMULATE.out.versions)
    }

    INGEST(ch_samples, stageConfig('ingest'))
    ch_versions = ch_versions.mix(INGEST.out.versions.first())

    QC(INGEST.out.h5ad, stageConfig('qc'))
    ch_versions = ch_versions.mix(QC.out.versions.first())

    //
    // One merged object from here on. The per-sample files are sorted by name so the
    // task's inputs (and its -resume hash) do not depend on which sample finished first.
    //
    ch_merge_in = QC.out.h5ad
        .map { meta, h5ad -> h5ad }
        .toSortedList { a, b -> a.name <=> b.name }
        .map { files -> [run_meta, files] }
    MERGE(ch_merge_in, stageConfig('merge'))
    ch_versions = ch_versions.mix(MERGE.out.versions)

    INTEGRATE(MERGE.out.h5ad, stageConfig('integrate'))
    ch_versions = ch_versions.mix(INTEGRATE.out.versions)

    CLUSTER(INTEGRATE.out.h5ad, stageConfig('cluster'))
    ch_versions = ch_versions.mix(CLUSTER.out.versions)

    ANNOTATE(CLUSTER.out.h5ad, stageConfig('annotate'))
    ch_versions = ch_versions.mix(ANNOTATE.out.versions)

    SCORE(ANNOTATE.out.h5ad, stageConfig('score'))
    ch_versions = ch_versions.mix(SCORE.out.versions)

    COMPARE(SCORE.out.h5ad, stageConfig('compare'))
    ch_versions = ch_versions.mix(COMPARE.out.versions)

    LIGREC(COMPARE.out.h5ad, stageConfig('ligrec'))
    ch_versions = ch_versions.mix(LIGREC.out.versions)
    ch_final    = LIGREC.out.h5ad
    ch_html     = Channel.empty()

    if (!params.skip_report) {
        REPORT(LIGREC.out.h5ad, ch_config)
        ch_versions = ch_versions.mix(REPORT.out.versions)
        ch_final    = REPORT.out.h5ad
        ch_html     = REPORT.out.html
    }

    //
    // Collected software versions -> OUTDIR/pipeline_info/versions.yml
    //
    def workflow_versions = "\"Workflow\":\n    Nextflow: ${workflow.nextflow.version.toString()}\n    bonemet-pipeline: ${workflow.manifest.version}\n".toString()
    ch_workflow_versions = Channel.of(workflow_versions)
    ch_collected_versions = ch_versions
        .map { it.text }
        .unique()
        .mix(ch_workflow_versions)
        .collectFile(name: 'versions.yml', storeDir: "${params.outdir}/pipeline_info", sort: true, newLine: false)

    emit:
    h5ad     = ch_final                // [meta, bonemet.h5ad]
    report   = ch_html                 // report.html
    config   = ch_config               // config.yaml
    versions = ch_collected_versions   // pipeline_info/versions.yml
}
